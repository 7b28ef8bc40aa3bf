// The vsr web page: pick or drop a file, upload it (XMLHttpRequest, for its upload progress), follow the job
// by polling (EventSource cannot send the bearer token), compare a frame before/after, download the result.
// Everything it calls is the public HTTP API (/docs); nothing is loaded from anywhere else.
"use strict";

const TOKEN_KEY = "vsr-token";
const VIDEO_EXT = [".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi"];
const IMAGE_EXT = [".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"];
const POLL_MS = 500;
const LIST_MS = 3000;
const ENCODER_NAMES = {libx264: "H.264 (libx264)", libx265: "H.265 / HEVC (libx265)", "libvpx-vp9": "VP9 (libvpx)",
                       libsvtav1: "AV1 (SVT-AV1)", ffv1: "FFV1 (lossless, large)"};
const STATUS_WORDS = {413: "Too large", 415: "Not a supported file", 422: "Not accepted", 429: "The server is busy",
                      409: "Not ready", 404: "Not found", 403: "Refused", 408: "Timed out", 400: "Bad request"};

const $ = (id) => document.getElementById(id);
const state = {encoders: {}, limits: {}, scale: 4, file: null, kind: null, jobId: null, pollTimer: null,
               listTimer: null, previewTimer: null, result: null, urls: {}, thumbs: new Map(), listKey: ""};

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

// --- talking to the server -------------------------------------------------------------------------

function token() { return sessionStorage.getItem(TOKEN_KEY); }
function authHeaders() { const t = token(); return t ? {Authorization: "Bearer " + t} : {}; }

function describeError(status, body, fallback) {
  let detail = body && body.detail;
  if (Array.isArray(detail)) {  // FastAPI's own validation errors: [{loc, msg}, ...]
    detail = detail.map((d) => ((d.loc || []).filter((p) => p !== "body").join(".") + ": " + d.msg)).join("; ");
  }
  const text = (typeof detail === "string" && detail) || fallback || "no details";
  const word = STATUS_WORDS[status];
  return word ? `${word} (${status}): ${text}` : `Error ${status}: ${text}`;
}

async function readError(status, response, statusText) {
  let body = null;
  try {
    if (response instanceof Blob) body = JSON.parse(await response.text());
    else if (typeof response === "string") body = JSON.parse(response);
    else body = response;
  } catch (e) { body = null; }
  return describeError(status, body, statusText);
}

function needToken(refused) {
  $("token-section").hidden = false;
  showMessage(refused ? "The server refused that token. Enter the token the server was started with."
                      : "This server needs an access token.");
  $("token-input").focus();
}

async function api(path, options = {}) {
  let r;
  try {
    r = await fetch(path, {...options, headers: {...authHeaders(), ...(options.headers || {})}});
  } catch (e) {
    throw new ApiError(0, "Cannot reach the server. Is vsr serve still running?");
  }
  if (r.status === 401) {
    const refused = Boolean(token());
    sessionStorage.removeItem(TOKEN_KEY);
    needToken(refused);
    throw new ApiError(401, "This server needs its access token.");
  }
  if (!r.ok) {
    let body = null;
    try { body = await r.json(); } catch (e) { body = null; }
    throw new ApiError(r.status, describeError(r.status, body, r.statusText));
  }
  return r;
}

function upload(path, form, responseType, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    for (const [k, v] of Object.entries(authHeaders())) xhr.setRequestHeader(k, v);
    xhr.responseType = responseType;
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) onProgress(e.loaded, e.total); };
    xhr.onload = async () => {
      if (xhr.status === 401) {
        const refused = Boolean(token());
        sessionStorage.removeItem(TOKEN_KEY);
        needToken(refused);
        reject(new ApiError(401, "This server needs its access token; enter it and press Upscale again."));
      } else if (xhr.status >= 200 && xhr.status < 300) {
        resolve(xhr.response);
      } else {
        reject(new ApiError(xhr.status, await readError(xhr.status, xhr.response, xhr.statusText)));
      }
    };
    xhr.onerror = () => reject(new ApiError(0, "The upload stopped: the server closed the connection " +
                                               "(is the file over its size limit, or did the server stop?)."));
    xhr.send(form);
  });
}

// --- messages --------------------------------------------------------------------------------------

function showMessage(text) {
  const m = $("message");
  m.textContent = text;
  m.hidden = !text;
}

function report(err) {
  showMessage(err instanceof ApiError ? err.message : "Something went wrong in the page: " + err);
}

function formatBytes(n) {
  if (n >= 1 << 30) return (n / (1 << 30)).toFixed(1) + " GB";
  if (n >= 1 << 20) return (n / (1 << 20)).toFixed(1) + " MB";
  if (n >= 1 << 10) return (n / (1 << 10)).toFixed(0) + " KB";
  return n + " bytes";
}

function formatSeconds(s) {
  if (s == null) return "";
  if (s < 90) return Math.round(s) + " s";
  if (s < 5400) return Math.round(s / 60) + " min";
  return (s / 3600).toFixed(1) + " h";
}

function extension(name) {
  const i = name.lastIndexOf(".");
  return i < 0 ? "" : name.slice(i).toLowerCase();
}

function setUrl(key, url) {  // object URLs are revoked when replaced, so memory does not grow
  if (state.urls[key]) URL.revokeObjectURL(state.urls[key]);
  state.urls[key] = url;
  return url;
}

// --- start-up: the model, the encoders, the job list ----------------------------------------------

async function init() {
  try {
    const health = await (await api("/healthz")).json();
    $("server-status").textContent = `Server ready: ${health.device}, ${health.precision}`;
  } catch (e) {
    $("server-status").textContent = "Server not answering";
    report(e);
    return;
  }
  let info;
  try {
    info = await (await api("/v1/models")).json();
  } catch (e) {
    if (e.status !== 401) report(e);
    return;
  }
  showMessage("");
  $("token-section").hidden = true;
  state.encoders = info.encoders || {};
  state.limits = info.limits || {};
  const select = $("model-select");
  select.replaceChildren();
  for (const m of info.models) {
    const opt = document.createElement("option");
    opt.value = m.name || "";
    opt.textContent = `${m.name || m.file || m.arch} (x${m.scale})`;
    select.append(opt);
    state.scale = m.scale;
  }
  select.disabled = info.models.length < 2;
  showModel(info.models[0]);
  const codec = $("codec-select");
  codec.replaceChildren(new Option("Same as the input", ""));
  for (const name of Object.keys(state.encoders)) codec.append(new Option(ENCODER_NAMES[name] || name, name));
  updateCrf();
  updateStart();
  refreshJobs();
  clearInterval(state.listTimer);
  state.listTimer = setInterval(() => { if (!document.hidden) refreshJobs(); }, LIST_MS);
}

function showModel(m) {
  if (!m) return;
  const parts = [];
  if (m.description) parts.push(m.description + ".");
  if (m.psnr) {
    parts.push("Measured Y-PSNR: " + Object.entries(m.psnr).map(([k, v]) => `${k} ${v.toFixed(2)} dB`).join(", ") + ".");
  }
  if (!parts.length) parts.push(`${m.arch || "model"} from ${m.file || "a weights file"}; no measured quality is recorded for it.`);
  parts.push("This server runs one model; start vsr serve with --weights to change it.");
  $("model-info").textContent = parts.join(" ");
}

function updateCrf() {
  const enc = state.encoders[$("codec-select").value];
  const crf = $("crf-input");
  if (enc && enc.crf === null) {
    crf.value = "";
    crf.disabled = true;
    $("crf-hint").textContent = "This codec is lossless: no CRF.";
    return;
  }
  crf.disabled = false;
  if (!enc) {  // the input's codec: its encoder's range applies (the server says if the number is out of it)
    crf.min = 0; crf.max = 63;
    crf.placeholder = "default";
    $("crf-hint").textContent = "0-51 for H.264/H.265, 0-63 for VP9/AV1; lower is better and larger. Empty: vsr's default.";
    return;
  }
  const [lo, hi] = enc.crf;
  crf.min = lo; crf.max = hi;
  crf.placeholder = enc.default_crf != null ? `default ${enc.default_crf}` : "default";
  $("crf-hint").textContent = `${lo} to ${hi}; lower is better and larger. Empty: vsr's default.`;
}

function updateStart() {
  $("start-button").disabled = !(state.file && state.kind && $("model-select").options.length);
}

// --- choosing a file -------------------------------------------------------------------------------

function chooseFile(file) {
  state.file = null;
  state.kind = null;
  showMessage("");
  if (!file) { $("file-name").textContent = ""; updateStart(); return; }
  const ext = extension(file.name);
  const kind = VIDEO_EXT.includes(ext) ? "video" : IMAGE_EXT.includes(ext) ? "image" : null;
  if (!kind) {
    $("file-name").textContent = "";
    showMessage(`${file.name}: this file type is not supported. Choose a video (${VIDEO_EXT.join(", ")}) ` +
                `or an image (${IMAGE_EXT.join(", ")}).`);
    updateStart();
    return;
  }
  const limit = state.limits.max_upload_bytes;
  if (kind === "video" && limit && file.size > limit) {
    $("file-name").textContent = "";
    showMessage(`${file.name} is ${formatBytes(file.size)}; this server takes uploads up to ${formatBytes(limit)} ` +
                "(vsr serve --max-upload-mb).");
    updateStart();
    return;
  }
  state.file = file;
  state.kind = kind;
  $("file-name").textContent = `${file.name} (${kind}, ${formatBytes(file.size)})`;
  $("video-options").hidden = kind !== "video";
  updateStart();
}

function setupDropZone() {
  const zone = $("drop-zone");
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    if (e.dataTransfer.files.length) chooseFile(e.dataTransfer.files[0]);
  });
  // a file dropped beside the zone must not make the browser leave the page
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());
  $("file-input").addEventListener("change", (e) => chooseFile(e.target.files[0]));
}

// --- upscaling -------------------------------------------------------------------------------------

async function start(e) {
  e.preventDefault();
  if (!state.file) return;
  showMessage("");
  const form = new FormData();
  form.append("file", state.file, state.file.name);
  if (state.kind === "video") {
    if ($("codec-select").value) form.append("codec", $("codec-select").value);
    if ($("crf-input").value.trim()) form.append("crf", $("crf-input").value.trim());
  }
  const box = $("upload-box");
  box.hidden = false;
  $("upload-progress").value = 0;
  $("start-button").disabled = true;
  const onProgress = (loaded, total) => {
    $("upload-progress").value = Math.round(100 * loaded / total);
    $("upload-text").textContent = `${formatBytes(loaded)} of ${formatBytes(total)}` +
      (loaded >= total ? (state.kind === "image" ? ", upscaling\u2026" : ", checking\u2026") : "");
  };
  const file = state.file;
  try {
    if (state.kind === "image") {
      $("upload-text").textContent = "uploading\u2026";
      const blob = await upload("/v1/images", form, "blob", onProgress);
      $("upload-text").textContent = "done";
      showImageResult(file, blob);
    } else {
      const job = await upload("/v1/jobs", form, "json", onProgress);
      $("upload-text").textContent = "uploaded";
      followJob(job.id, job.name || file.name);
      refreshJobs();
    }
  } catch (err) {
    $("upload-text").textContent = "failed";
    report(err);
  } finally {
    updateStart();
  }
}

function followJob(id, name) {
  state.jobId = id;
  $("job-section").hidden = false;
  $("job-cancel").hidden = false;
  $("job-name").textContent = name;
  $("job-status").textContent = "Queued.";
  $("job-progress").removeAttribute("value");
  $("job-detail").textContent = "";
  clearTimeout(state.pollTimer);
  poll(id, null);
}

async function poll(id, lastStatus) {
  if (state.jobId !== id) return;
  let job;
  try {
    job = await (await api(`/v1/jobs/${id}`)).json();
  } catch (err) {
    report(err);
    if (err.status !== 404 && err.status !== 401) state.pollTimer = setTimeout(() => poll(id, lastStatus), 2000);
    return;
  }
  const total = job.frames_total;
  const bar = $("job-progress");
  if (total) { bar.max = total; bar.value = Math.min(job.frames_done, total); } else bar.removeAttribute("value");
  const parts = [`${job.frames_done} of ${total || "?"} frames`];
  if (job.fps) parts.push(`${job.fps.toFixed(2)} fps`);
  if (job.eta_s != null) parts.push(`about ${formatSeconds(job.eta_s)} left`);
  $("job-detail").textContent = parts.join(", ");
  if (job.status !== lastStatus) {  // the live region speaks on changes only, not on every frame
    const words = {queued: "Queued: waiting for the jobs before it.", running: "Upscaling\u2026",
                   done: `Done: ${job.frames_done} frames.`, failed: "Failed: " + (job.error || "no reason given"),
                   cancelled: "Cancelled."};
    $("job-status").textContent = (words[job.status] || job.status) + (job.note ? ` (${job.note})` : "");
  }
  if (job.status === "done") {
    $("job-cancel").hidden = true;
    showJobResult(job);
    refreshJobs();
  } else if (job.status === "failed" || job.status === "cancelled") {
    $("job-cancel").hidden = true;
    if (job.status === "failed") showMessage("The job failed: " + (job.error || "no reason given"));
    refreshJobs();
  } else {
    state.pollTimer = setTimeout(() => poll(id, job.status), POLL_MS);
  }
}

async function cancelJob(id) {
  try {
    await api(`/v1/jobs/${id}`, {method: "DELETE"});
  } catch (err) { report(err); }
  refreshJobs();
}

// --- the comparison --------------------------------------------------------------------------------

function setCompare(pos) {
  $("before-img").style.clipPath = `inset(0 ${100 - pos}% 0 0)`;
  $("divider").style.left = pos + "%";
  $("compare-slider").setAttribute("aria-valuetext", `${pos}%: bicubic on the left, vsr on the right`);
}

function setupCompare() {
  const slider = $("compare-slider");
  slider.addEventListener("input", () => setCompare(Number(slider.value)));
  const figure = $("compare");
  const follow = (e) => {
    const r = figure.getBoundingClientRect();
    const pos = Math.max(0, Math.min(100, Math.round(100 * (e.clientX - r.left) / r.width)));
    slider.value = pos;
    setCompare(pos);
  };
  figure.addEventListener("pointerdown", (e) => { figure.setPointerCapture(e.pointerId); follow(e); });
  figure.addEventListener("pointermove", (e) => { if (figure.hasPointerCapture(e.pointerId)) follow(e); });
  setCompare(Number(slider.value));
  const frame = $("frame-input");
  frame.addEventListener("input", () => {
    showFrameNumber();
    clearTimeout(state.previewTimer);
    state.previewTimer = setTimeout(() => loadPreview(Number(frame.value)), 250);
  });
}

function showFrameNumber() {
  const f = $("frame-input");
  $("frame-output").textContent = `${Number(f.value) + 1} of ${Number(f.max) + 1}`;
  f.setAttribute("aria-valuetext", `frame ${Number(f.value) + 1} of ${Number(f.max) + 1}`);
}

async function loadImage(img, key, url) {
  const blob = await (await api(url)).blob();
  await new Promise((resolve, reject) => {
    img.onload = resolve;
    img.onerror = () => reject(new ApiError(0, "The browser could not show the preview picture."));
    img.src = setUrl(key, URL.createObjectURL(blob));
  });
}

async function loadPreview(index) {
  const result = state.result;
  if (!result || result.kind !== "video") return;
  const figure = $("compare");
  figure.classList.add("loading");
  try {
    const base = `/v1/jobs/${result.id}/preview?frame=${index}`;
    await Promise.all([loadImage($("after-img"), "after", base + "&kind=result"),
                       loadImage($("before-img"), "before", base + "&kind=bicubic")]);
    $("after-img").alt = `frame ${index + 1}, upscaled by vsr`;
    $("before-img").alt = `frame ${index + 1}, the input resized by bicubic interpolation`;
  } catch (err) {
    report(err);
  } finally {
    figure.classList.remove("loading");
  }
}

async function showJobResult(job) {
  state.result = {kind: "video", id: job.id};
  const section = $("result-section");
  section.hidden = false;
  $("result-name").textContent = job.name || job.id;
  $("before-tag").textContent = "Bicubic";
  $("compare-caption").textContent = "Left of the line: the input frame enlarged by bicubic interpolation. " +
                                     "Right: vsr's output. Drag the picture or use the slider.";
  $("frame-picker").hidden = job.frames_total < 2;
  const frame = $("frame-input");
  frame.max = Math.max(0, job.frames_total - 1);
  frame.value = 0;
  showFrameNumber();
  const link = $("download");
  const filename = (job.name ? job.name.replace(/\.[^.]*$/, "") : job.id) + "_x4.mkv";
  link.download = filename;
  link.dataset.job = job.id;
  if (token()) {  // a link cannot carry the token: fetch the file, then save it
    link.href = "#";
    $("download-note").textContent = "Matroska (.mkv) with the input's audio and subtitles.";
  } else {
    link.href = `/v1/jobs/${job.id}/result`;
    $("download-note").textContent = "Matroska (.mkv) with the input's audio and subtitles.";
  }
  await loadPreview(0);
}

function showImageResult(file, blob) {
  state.result = {kind: "image"};
  $("job-section").hidden = true;
  $("result-section").hidden = false;
  $("result-name").textContent = file.name;
  $("frame-picker").hidden = true;
  $("before-tag").textContent = "Input";
  $("compare-caption").textContent = "Left of the line: the input, enlarged by the browser. Right: vsr's output. " +
                                     "Drag the picture or use the slider.";
  const after = setUrl("after", URL.createObjectURL(blob));
  $("after-img").src = after;
  $("before-img").src = setUrl("before", URL.createObjectURL(file));
  $("after-img").alt = `${file.name}, upscaled by vsr`;
  $("before-img").alt = `${file.name}, the input enlarged by the browser`;
  const link = $("download");
  link.href = after;
  link.download = file.name.replace(/\.[^.]*$/, "") + "_x4.png";
  delete link.dataset.job;
  $("download-note").textContent = "PNG.";
}

async function download(e) {
  const link = $("download");
  if (!link.dataset.job || !token()) return;  // a plain link (no token) or an image already in memory
  e.preventDefault();
  try {
    const blob = await (await api(`/v1/jobs/${link.dataset.job}/result`)).blob();
    const a = document.createElement("a");
    a.href = setUrl("download", URL.createObjectURL(blob));
    a.download = link.download;
    document.body.append(a);
    a.click();
    a.remove();
  } catch (err) { report(err); }
}

// --- the job list ----------------------------------------------------------------------------------

async function thumbnail(img, job) {
  if (state.thumbs.has(job.id)) { img.src = state.thumbs.get(job.id); return; }
  if (job.status === "cancelled") return;
  try {
    const blob = await (await api(`/v1/jobs/${job.id}/thumbnail`)).blob();
    const url = URL.createObjectURL(blob);
    state.thumbs.set(job.id, url);
    img.src = url;
  } catch (err) { /* the job was removed meanwhile: no picture */ }
}

function actionButton(label, action, job, handler) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = "small";
  b.textContent = label;
  b.dataset.action = action;
  b.dataset.job = job.id;
  b.setAttribute("aria-label", `${label} ${job.name || job.id}`);
  b.addEventListener("click", handler);
  return b;
}

function statusText(job) {
  if (job.status === "running") {
    const pct = job.progress != null ? ` ${Math.round(100 * job.progress)}%` : "";
    return `running${pct}` + (job.eta_s != null ? `, ${formatSeconds(job.eta_s)} left` : "");
  }
  if (job.status === "done") return `done, ${job.frames_done} frames`;
  if (job.status === "failed") return "failed: " + (job.error || "");
  return job.status;
}

async function refreshJobs() {
  let jobs;
  try {
    jobs = (await (await api("/v1/jobs")).json()).jobs;
  } catch (err) {
    if (err.status !== 401) report(err);
    return;
  }
  const key = JSON.stringify(jobs.map((j) => [j.id, j.status, j.frames_done]));
  if (key === state.listKey) return;  // unchanged: keep the rows (and the keyboard focus) as they are
  state.listKey = key;
  const focused = document.activeElement && document.activeElement.dataset
    ? [document.activeElement.dataset.action, document.activeElement.dataset.job] : null;
  const body = $("jobs-body");
  body.replaceChildren();
  for (const job of jobs) {
    const tr = document.createElement("tr");
    tr.dataset.job = job.id;
    const tdThumb = document.createElement("td");
    const img = document.createElement("img");
    img.alt = "";
    tdThumb.append(img);
    thumbnail(img, job);
    const tdName = document.createElement("td");
    tdName.textContent = job.name || job.id;
    const created = document.createElement("div");
    created.className = "muted";
    created.textContent = new Date(job.created * 1000).toLocaleString();
    tdName.append(created);
    const tdStatus = document.createElement("td");
    tdStatus.textContent = statusText(job);
    tdStatus.className = "job-status";
    const tdActions = document.createElement("td");
    const actions = document.createElement("div");
    actions.className = "actions";
    if (job.status === "done") {
      actions.append(actionButton("Compare", "compare", job, () => {
        showJobResult(job);
        $("result-heading").scrollIntoView();
        $("frame-input").focus();
      }));
    }
    if (job.status === "queued" || job.status === "running") {
      actions.append(actionButton("Cancel", "cancel", job, () => cancelJob(job.id)));
    } else {
      actions.append(actionButton("Delete", "delete", job, () => cancelJob(job.id)));
    }
    tdActions.append(actions);
    tr.append(tdThumb, tdName, tdStatus, tdActions);
    body.append(tr);
  }
  $("jobs-table").hidden = jobs.length === 0;
  $("jobs-empty").hidden = jobs.length > 0;
  if (focused && focused[0]) {
    const again = body.querySelector(`button[data-action="${focused[0]}"][data-job="${focused[1]}"]`);
    if (again) again.focus();
  }
  if (state.result && state.result.kind === "video" && !jobs.some((j) => j.id === state.result.id)) {
    $("result-section").hidden = true;  // its job was deleted
    state.result = null;
  }
}

// --- wiring ----------------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  setupDropZone();
  setupCompare();
  $("upload-form").addEventListener("submit", start);
  $("codec-select").addEventListener("change", updateCrf);
  $("job-cancel").addEventListener("click", () => { if (state.jobId) cancelJob(state.jobId); });
  $("download").addEventListener("click", download);
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const value = $("token-input").value.trim();
    if (!value) return;
    sessionStorage.setItem(TOKEN_KEY, value);
    $("token-input").value = "";
    init();
  });
  init();
});
