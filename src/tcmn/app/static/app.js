// TCMN annotate: the page. Plain ES module, no build step; talks to the API of tcmn/app/server.py.
const $ = (s) => document.querySelector(s);
const canvas = $("#canvas"), ctx = canvas.getContext("2d");
const timeline = $("#timeline"), tctx = timeline.getContext("2d");

const S = {
  project: null, W: 0, H: 0, n: 0, t: 0,
  labels: null, kind: null, image: null,
  tool: "brush", object: 1, size: 10, opacity: 0.5,
  undo: new Map(), redo: new Map(), polygon: [],
  scale: 1, ox: 0, oy: 0, painting: false, loading: false,
  events: null, path: "",
};

// ------------------------------------------------------------------------------- API helpers
async function api(method, url, body, type = "application/json") {
  const opts = { method, headers: {} };
  if (body !== undefined) {
    opts.body = type === "application/json" ? JSON.stringify(body) : body;
    opts.headers["Content-Type"] = type;
  }
  const r = await fetch(url, opts);
  const ct = r.headers.get("content-type") || "";
  if (!r.ok) {
    const err = ct.includes("json") ? (await r.json()).error : r.statusText;
    throw new Error(err);
  }
  return ct.includes("json") ? r.json() : r;
}
function status(msg, error = false) {
  const el = $("#status");
  el.textContent = msg;
  el.style.color = error ? "#ff6b6b" : "#f0b35a";
}
async function guard(fn) {
  try { await fn(); } catch (e) { status(e.message, true); }
}

// ------------------------------------------------------------------------------- open
async function browse(path = "") {
  const d = await api("GET", `/api/files?path=${encodeURIComponent(path)}`);
  S.path = d.path;
  $("#crumbs").textContent = "/" + d.path;
  const ul = $("#files");
  ul.innerHTML = "";
  if (d.path) {
    const up = document.createElement("li");
    up.textContent = "..";
    up.onclick = () => guard(() => browse(d.path.split("/").slice(0, -1).join("/")));
    ul.append(up);
  }
  for (const e of d.entries) {
    const li = document.createElement("li");
    li.textContent = e.name + (e.dir ? "/" : "");
    if (e.video) li.className = "video";
    li.title = e.video ? "open" : "browse";
    li.onclick = () => guard(() => (e.video ? openVideo(e.path) : browse(e.path)));
    if (e.dir && e.video) li.ondblclick = () => guard(() => browse(e.path));
    ul.append(li);
  }
}

async function loadCheckpoints() {
  const d = await api("GET", "/api/checkpoints");
  const list = $("#ckpts");
  for (const c of d.checkpoints) {
    const o = document.createElement("option");
    o.value = c;
    list.append(o);
  }
  if (d.default) $("#ckpt").value = d.default;
}

async function openVideo(path) {
  status("opening " + path);
  const p = await api("POST", "/api/open", { path, ckpt: $("#ckpt").value || null });
  S.project = p;
  [S.H, S.W] = p.size;
  S.n = p.n_frames;
  canvas.width = S.W;
  canvas.height = S.H;
  $("#scrub").max = S.n - 1;
  $("#video-name").textContent = `${p.path} (${S.n} frames, ${S.W}x${S.H}; ${p.weights})`;
  S.undo.clear();
  S.redo.clear();
  fitView();
  renderObjects();
  await goto(p.drawn.length ? p.drawn[0] : 0);
  status("opened");
}

// ------------------------------------------------------------------------------- frames
async function goto(t) {
  if (!S.project) return;
  t = Math.max(0, Math.min(S.n - 1, t));
  S.t = t;
  S.loading = true;  // no drawing until this frame's image and mask are here
  S.polygon = [];
  $("#scrub").value = t;
  const img = new Image();
  img.src = `/api/frame/${t}`;
  await img.decode();
  if (S.t !== t) return;  // scrubbed on meanwhile
  await loadMask(t);
  if (S.t !== t) return;
  S.image = img;
  S.loading = false;
  render();
  drawTimeline();
}

async function loadMask(t) {
  const r = await fetch(`/api/mask/${t}`);
  if (r.status === 204) {
    if (S.t === t) {
      S.labels = new Uint8Array(S.W * S.H);
      S.kind = null;
    }
    return;
  }
  if (!r.ok) throw new Error((await r.json()).error);
  const kind = r.headers.get("X-Mask-Kind");
  const bmp = await createImageBitmap(await r.blob(), { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  const off = new OffscreenCanvas(S.W, S.H), octx = off.getContext("2d");
  octx.drawImage(bmp, 0, 0);
  const d = octx.getImageData(0, 0, S.W, S.H).data;
  const lab = new Uint8Array(S.W * S.H);
  for (let i = 0; i < lab.length; i++) lab[i] = d[4 * i];
  if (S.t === t) {
    S.labels = lab;
    S.kind = kind;
  }
}

function colour(oid) {
  const o = (S.project && S.project.objects[String(oid)]) || null;
  const hex = o ? o.colour : ["#e6194b", "#3cb44b", "#4363d8", "#ffe119", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45"][oid - 1];
  return [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
}

function render() {
  if (!S.image) return;
  ctx.drawImage(S.image, 0, 0, S.W, S.H);
  const img = ctx.getImageData(0, 0, S.W, S.H), d = img.data, a = S.opacity;
  const lut = [null];
  for (let k = 1; k <= 9; k++) lut.push(colour(k));
  for (let i = 0; i < S.labels.length; i++) {
    const k = S.labels[i];
    if (!k) continue;
    const c = lut[k];
    d[4 * i] = d[4 * i] * (1 - a) + c[0] * a;
    d[4 * i + 1] = d[4 * i + 1] * (1 - a) + c[1] * a;
    d[4 * i + 2] = d[4 * i + 2] * (1 - a) + c[2] * a;
  }
  ctx.putImageData(img, 0, 0);
  if (S.polygon.length) {
    ctx.strokeStyle = "#fff";
    ctx.beginPath();
    S.polygon.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
    ctx.stroke();
  }
  const kind = S.kind === "drawn" ? "drawn by hand" : S.kind === "predicted" ? "propagated" : "no mask";
  const conf = S.project.confidence[String(S.t)];
  $("#frame-info").textContent = `frame ${S.t + 1} / ${S.n} (${S.project.frame_names[S.t]}): ${kind}` +
    (conf !== undefined && conf !== null ? `, confidence ${conf.toFixed(2)}` : "");
}

// ------------------------------------------------------------------------------- timeline
function drawTimeline() {
  const w = (timeline.width = timeline.clientWidth || 800), h = timeline.height;
  tctx.fillStyle = "#111";
  tctx.fillRect(0, 0, w, h);
  if (!S.project) return;
  const x = (t) => ((t + 0.5) / S.n) * w;
  tctx.fillStyle = "#555";
  for (const t of S.project.predicted) tctx.fillRect(x(t) - 1, h - 10, 2, 10);
  tctx.fillStyle = "#fff";
  for (const t of S.project.drawn) tctx.fillRect(x(t) - 2, h - 14, 4, 14);
  tctx.strokeStyle = "#3cb44b";
  tctx.lineWidth = 2;
  tctx.beginPath();
  let first = true;
  for (let t = 0; t < S.n; t++) {
    const c = S.project.confidence[String(t)];
    if (c === undefined || c === null) { first = true; continue; }
    const y = h - 16 - c * (h - 20);
    first ? tctx.moveTo(x(t), y) : tctx.lineTo(x(t), y);
    first = false;
  }
  tctx.stroke();
  tctx.fillStyle = "#ff4d4d";
  tctx.fillRect(x(S.t) - 1, 0, 2, h);
}
timeline.onclick = (e) => {
  const r = timeline.getBoundingClientRect();
  guard(() => goto(Math.floor(((e.clientX - r.left) / r.width) * S.n)));
};
$("#scrub").oninput = (e) => guard(() => goto(+e.target.value));

// ------------------------------------------------------------------------------- objects
function renderObjects() {
  const ol = $("#objects");
  ol.innerHTML = "";
  for (let k = 1; k <= 9; k++) {
    const o = S.project.objects[String(k)] || { name: `object ${k}`, colour: "#" + colour(k).map((v) => v.toString(16).padStart(2, "0")).join("") };
    const li = document.createElement("li");
    li.className = k === S.object ? "on" : "";
    const c = document.createElement("input");
    c.type = "color";
    c.value = o.colour;
    c.onchange = () => guard(async () => { S.project.objects = (await api("POST", "/api/object", { id: k, colour: c.value })).objects; render(); });
    const n = document.createElement("input");
    n.type = "text";
    n.value = o.name;
    n.onchange = () => guard(async () => { S.project.objects = (await api("POST", "/api/object", { id: k, name: n.value })).objects; });
    li.append(c, " ", n);
    li.onclick = () => { S.object = k; renderObjects(); };
    ol.append(li);
  }
}

// ------------------------------------------------------------------------------- drawing
function pos(e) {
  const r = canvas.getBoundingClientRect();
  return [Math.floor(((e.clientX - r.left) / r.width) * S.W), Math.floor(((e.clientY - r.top) / r.height) * S.H)];
}
function remember() {
  const u = S.undo.get(S.t) || [];
  u.push(S.labels.slice());
  if (u.length > 50) u.shift();
  S.undo.set(S.t, u);
  S.redo.set(S.t, []);
}
function dab(x, y) {
  const r = S.size, v = S.tool === "eraser" ? 0 : S.object;
  for (let yy = Math.max(0, y - r); yy <= Math.min(S.H - 1, y + r); yy++)
    for (let xx = Math.max(0, x - r); xx <= Math.min(S.W - 1, x + r); xx++)
      if ((xx - x) ** 2 + (yy - y) ** 2 <= r * r) S.labels[yy * S.W + xx] = v;
}
function line(a, b) {
  const n = Math.max(1, Math.ceil(Math.hypot(b[0] - a[0], b[1] - a[1]) / Math.max(1, S.size / 2)));
  for (let i = 0; i <= n; i++) dab(Math.round(a[0] + ((b[0] - a[0]) * i) / n), Math.round(a[1] + ((b[1] - a[1]) * i) / n));
}
function flood(x, y) {
  const from = S.labels[y * S.W + x], to = S.object;
  if (from === to) return;
  const stack = [y * S.W + x];
  while (stack.length) {
    const i = stack.pop();
    if (S.labels[i] !== from) continue;
    S.labels[i] = to;
    const px = i % S.W;
    if (px > 0) stack.push(i - 1);
    if (px < S.W - 1) stack.push(i + 1);
    if (i >= S.W) stack.push(i - S.W);
    if (i < S.W * (S.H - 1)) stack.push(i + S.W);
  }
}
function closePolygon() {
  if (S.polygon.length < 3) { S.polygon = []; render(); return; }
  remember();
  const off = new OffscreenCanvas(S.W, S.H), o = off.getContext("2d");
  o.fillStyle = "#fff";
  o.beginPath();
  S.polygon.forEach(([x, y], i) => (i ? o.lineTo(x, y) : o.moveTo(x, y)));
  o.closePath();
  o.fill();
  const d = o.getImageData(0, 0, S.W, S.H).data;
  for (let i = 0; i < S.labels.length; i++) if (d[4 * i + 3] > 127) S.labels[i] = S.object;
  S.polygon = [];
  save();
}
let last = null;
canvas.onpointerdown = (e) => {
  if (!S.project || S.loading || e.button !== 0 || e.altKey) return;
  const p = pos(e);
  if (S.tool === "polygon") { S.polygon.push(p); render(); return; }
  if (S.tool === "fill") { remember(); flood(...p); save(); return; }
  remember();
  S.painting = true;
  last = p;
  dab(...p);
  render();
  canvas.setPointerCapture(e.pointerId);
};
canvas.onpointermove = (e) => {
  if (!S.painting) return;
  const p = pos(e);
  line(last, p);
  last = p;
  render();
};
canvas.onpointerup = () => { if (S.painting) { S.painting = false; save(); } };
canvas.ondblclick = () => { if (S.tool === "polygon") closePolygon(); };

async function save() {
  render();
  const t = S.t, lab = S.labels;
  const off = new OffscreenCanvas(S.W, S.H), o = off.getContext("2d");
  const img = o.createImageData(S.W, S.H);
  for (let i = 0; i < lab.length; i++) {
    img.data[4 * i] = img.data[4 * i + 1] = img.data[4 * i + 2] = lab[i];
    img.data[4 * i + 3] = 255;
  }
  o.putImageData(img, 0, 0);
  const blob = await off.convertToBlob({ type: "image/png" });
  await guard(async () => {
    await api("PUT", `/api/mask/${t}`, blob, "image/png");
    S.kind = "drawn";
    await refresh();
    status(`frame ${t + 1} saved`);
  });
}
async function refresh() {
  const p = await api("GET", "/api/project");
  S.project = { ...S.project, ...p };
  renderObjects();
  render();
  drawTimeline();
}
function undoRedo(from, to) {
  const a = from.get(S.t) || [];
  if (!a.length) return;
  (to.get(S.t) || to.set(S.t, []).get(S.t)).push(S.labels.slice());
  S.labels = a.pop();
  save();
}
$("#undo").onclick = () => undoRedo(S.undo, S.redo);
$("#redo").onclick = () => undoRedo(S.redo, S.undo);
$("#clear").onclick = () => guard(async () => {
  await api("DELETE", `/api/mask/${S.t}`);
  await refresh();
  await goto(S.t);
});
document.querySelectorAll("#tools button").forEach((b) => (b.onclick = () => setTool(b.dataset.tool)));
function setTool(t) {
  S.tool = t;
  S.polygon = [];
  document.querySelectorAll("#tools button").forEach((b) => b.classList.toggle("on", b.dataset.tool === t));
  render();
}
$("#size").oninput = (e) => (S.size = +e.target.value);
$("#opacity").oninput = (e) => { S.opacity = e.target.value / 100; render(); };
$("#import").onchange = (e) => guard(async () => {
  const f = e.target.files[0];
  if (!f) return;
  await api("PUT", `/api/mask/${S.t}`, f, "image/png");
  e.target.value = "";
  await refresh();
  await goto(S.t);
});
$("#upload").onchange = (e) => guard(async () => {
  const f = e.target.files[0];
  if (!f) return;
  status(`uploading ${f.name}`);
  const d = await api("POST", `/api/upload?name=${encodeURIComponent(f.name)}`, f, "application/octet-stream");
  e.target.value = "";
  await browse("uploads");
  await openVideo(d.path);
});

// ------------------------------------------------------------------------------- zoom / pan
function fitView() {
  const st = $("#stage");
  S.scale = Math.min(st.clientWidth / S.W, st.clientHeight / S.H) || 1;
  S.ox = (st.clientWidth - S.W * S.scale) / 2;
  S.oy = (st.clientHeight - S.H * S.scale) / 2;
  applyView();
}
function applyView() {
  canvas.style.transform = `translate(${S.ox}px, ${S.oy}px) scale(${S.scale})`;
}
$("#stage").onwheel = (e) => {
  e.preventDefault();
  const r = $("#stage").getBoundingClientRect(), mx = e.clientX - r.left, my = e.clientY - r.top;
  const f = e.deltaY < 0 ? 1.15 : 1 / 1.15;
  S.ox = mx - (mx - S.ox) * f;
  S.oy = my - (my - S.oy) * f;
  S.scale *= f;
  applyView();
};
let pan = null;
$("#stage").onpointerdown = (e) => {
  if (e.button === 1 || e.button === 2 || e.altKey) { pan = [e.clientX - S.ox, e.clientY - S.oy]; e.preventDefault(); }
};
$("#stage").onpointermove = (e) => { if (pan) { S.ox = e.clientX - pan[0]; S.oy = e.clientY - pan[1]; applyView(); } };
window.addEventListener("pointerup", () => (pan = null));
$("#stage").oncontextmenu = (e) => e.preventDefault();

// ------------------------------------------------------------------------------- propagate
document.querySelectorAll("[data-dir]").forEach((b) => (b.onclick = () => guard(() => propagate(b.dataset.dir))));
async function propagate(direction) {
  const start = S.project.drawn.includes(S.t) ? S.t : null;
  await api("POST", "/api/propagate", { direction, start });
  $("#cancel").disabled = false;
  status(`propagating ${direction}` + (start !== null ? ` from frame ${start + 1}` : ""));
  listen();
}
function listen() {
  if (S.events) S.events.close();
  const es = (S.events = new EventSource("/api/events"));
  es.onmessage = (m) => {
    const p = JSON.parse(m.data);
    $("#bar").max = Math.max(1, p.total);
    $("#bar").value = p.done;
    $("#fps").textContent = `${p.done} / ${p.total} frames, ${p.fps.toFixed(1)} frames/s`;
    if (p.error) status(p.error, true);
    if (p.last_frame === S.t || p.done % 10 === 0) guard(refreshCurrent);
  };
  es.addEventListener("end", () => {
    es.close();
    $("#cancel").disabled = true;
    guard(async () => { await refresh(); await refreshCurrent(); status("propagation finished"); });
  });
}
async function refreshCurrent() {
  await loadMask(S.t);
  const p = await api("GET", "/api/project");
  S.project = { ...S.project, ...p };
  render();
  drawTimeline();
}
$("#cancel").onclick = () => guard(() => api("POST", "/api/cancel"));

// ------------------------------------------------------------------------------- export
$("#export-files").onclick = () => guard(async () => {
  const d = await api("POST", "/api/export", { kind: "files" });
  $("#exported").textContent = `written to ${d.out}`;
});
$("#export-dataset").onclick = () => guard(async () => {
  const root = prompt("prepared dataset folder (under the data root)", "annotated");
  if (!root) return;
  const d = await api("POST", "/api/export", { kind: "dataset", root });
  $("#exported").textContent = `video ${d.video} added to ${d.root}`;
});

// ------------------------------------------------------------------------------- keys
window.addEventListener("keydown", (e) => {
  if (e.target.tagName === "INPUT" && e.target.type === "text") return;
  const step = e.shiftKey ? 10 : 1;
  if (e.key === "ArrowRight") guard(() => goto(S.t + step));
  else if (e.key === "ArrowLeft") guard(() => goto(S.t - step));
  else if (e.key === "Enter" && S.tool === "polygon") closePolygon();
  else if (e.key === "Escape") { S.polygon = []; render(); }
  else if ((e.ctrlKey || e.metaKey) && e.key === "z") undoRedo(S.undo, S.redo);
  else if ((e.ctrlKey || e.metaKey) && e.key === "y") undoRedo(S.redo, S.undo);
  else if (/^[1-9]$/.test(e.key)) { S.object = +e.key; if (S.project) renderObjects(); }
  else if ({ b: 1, e: 1, p: 1, f: 1 }[e.key]) setTool({ b: "brush", e: "eraser", p: "polygon", f: "fill" }[e.key]);
  else return;
  e.preventDefault();
});
window.addEventListener("resize", () => { if (S.project) { fitView(); drawTimeline(); } });

window.tcmn = S;  // for the browser test and the curious
guard(async () => { await loadCheckpoints(); await browse(""); status("pick a video"); });
