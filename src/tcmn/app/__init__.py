"""The annotation app (``tcmn-annotate``): a local web page to draw a mask, propagate it through
the video, correct frames and export, over :class:`tcmn.inference.session.InferenceSession`.

- :mod:`tcmn.app.project`: the work on one video (drawn and propagated masks, objects), saved as
  it changes;
- :mod:`tcmn.app.server`: the HTTP API (FastAPI) and the page in ``static/``.
"""
