// styleforge explore: the page side. Keeps the widget state, sends at most one render request at a time (the
// newest state is sent as soon as the previous frame arrives, so dragging never builds a queue) and shows the
// frames the server streams back over the WebSocket. See styleforge/explore/server.py for the protocol.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const MAX_EDIT_SLIDERS = 12;
  const SEED_PER_PIXEL = 0.02;
  const MAX_CLASS_CHECKS = 64;  // multi-label networks with more classes get the text field only
  const COND_SLIDER_RANGE = 2;  // attribute sliders start at -2..2 and widen to any value typed beside them

  const state = {
    network: null, latent: "seed", seed: 0, psi: 1, cutoff: null, noise_mode: "const", class_idx: 0,
    classes: [], cond_vector: [],
    mix: false, mix_seed: 1, mix_start: 0, mix_end: null, translate: [0, 0], rotate: 0,
    animate: false, speed: 30, layer: "output", view: "rgb", channel: 0, gain: 1, fft: false,
    fft_range_db: 50, directions: null, edits: [], batch: 1, format: "auto",
  };
  // What tests and curious users can read: the state, the last frame shown, counters.
  const api = { state, info: null, lastFrame: null, frames: 0, errors: [], connected: false };
  window.styleforgeExplore = api;

  let socket = null;
  let nextId = 1;
  let inFlight = null;       // the render request the server is working on
  let dirty = false;         // the state changed since inFlight was sent
  let captureNext = false;   // the next frame is a PNG capture to download
  let frameTimes = [];
  let lastUrl = null;

  // ---- messages -------------------------------------------------------------------------------------------

  function requestFields() {
    const info = api.info;
    const m = { network: state.network, latent: state.latent, seed: state.seed, psi: state.psi,
                noise_mode: state.noise_mode, layer: state.layer, batch: state.batch, format: state.format,
                fft: state.fft, fft_range_db: state.fft_range_db };
    if (state.cutoff !== null) m.cutoff = state.cutoff;
    const enc = condEncoding(info);
    if (enc === "class") m.class_idx = state.class_idx;
    else if (enc === "multi-label") m.classes = [...state.classes];
    else if (enc === "continuous") m.cond_vector = [...state.cond_vector];  // copies: the sliders change state
    if (state.mix) {
      m.mix_seed = state.mix_seed; m.mix_start = state.mix_start;
      if (state.mix_end !== null) m.mix_end = state.mix_end;
    }
    if (info.has_transform) { m.translate = state.translate; m.rotate = state.rotate; }
    if (state.layer !== "output") { m.view = state.view; m.channel = state.channel; m.gain = state.gain; }
    if (state.directions !== null) { m.directions = state.directions; m.edits = [...state.edits]; }
    return m;
  }

  function send(obj) {
    if (!socket || socket.readyState !== WebSocket.OPEN) return false;
    socket.send(JSON.stringify(obj));
    return true;
  }

  function scheduleRender() { dirty = true; pump(); }

  function pump() {
    if (inFlight || !dirty || !api.info || !state.network) return;
    const m = { type: "render", id: nextId++, ...requestFields() };
    if (captureNext) m.format = "png";
    if (!send(m)) return;
    dirty = false;
    inFlight = { id: m.id, request: m, sent: performance.now(), capture: captureNext };
    captureNext = false;
  }

  function onBinary(buf) {
    const view = new DataView(buf);
    const n = view.getUint32(0);
    const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buf, 4, n)));
    const payload = buf.slice(4 + n);
    if (header.type === "w") {
      const seed = String(Math.round(state.seed * 1000) / 1000).replace(".", "_");
      download(new Blob([payload], { type: "application/octet-stream" }), `w_seed${seed}.npz`);
      return;
    }
    const mime = header.format === "png" ? "image/png" : "image/jpeg";
    const blob = new Blob([payload], { type: mime });
    const done = inFlight && inFlight.id === header.id ? inFlight : null;
    if (done) inFlight = null;
    if (done && done.capture) {
      const seed = String(Math.round(state.seed * 1000) / 1000).replace(".", "_");
      download(blob, `frame_seed${seed}.png`);
    }
    const url = URL.createObjectURL(blob);
    $("frame").src = url;
    if (lastUrl) URL.revokeObjectURL(lastUrl);
    lastUrl = url;
    api.frames += 1;
    api.lastFrame = { meta: header, request: done ? done.request : null, url };
    const now = performance.now();
    frameTimes.push(now);
    frameTimes = frameTimes.filter((t) => now - t < 2000);
    const fps = frameTimes.length > 1 ? (frameTimes.length - 1) / ((now - frameTimes[0]) / 1000) : 0;
    const rtt = done ? now - done.sent : NaN;
    $("status").textContent =
      `render ${header.render_ms.toFixed(1)} ms · encode ${header.encode_ms.toFixed(1)} ms · ` +
      `round trip ${rtt.toFixed(0)} ms · ${fps.toFixed(1)} fps · ${header.width}×${header.height} ${header.format}`;
    $("error").textContent = "";
    pump();
  }

  function onText(msg) {
    if (msg.type === "hello") {
      const sel = $("network");
      sel.innerHTML = "";
      for (const name of msg.networks) sel.add(new Option(name, name));
      if (msg.networks.length) openNetwork(msg.networks[0]);
    } else if (msg.type === "network") {
      applyNetwork(msg.info);
    } else if (msg.type === "w_uploaded") {
      $("latent-w").disabled = false;
      $("latent-w").checked = true;
      state.latent = "w";
      $("w-info").textContent = `projected w ${JSON.stringify(msg.shape)} loaded`;
      scheduleRender();
    } else if (msg.type === "dropped") {
      if (inFlight && inFlight.id === msg.id) { inFlight = null; pump(); }
    } else if (msg.type === "error") {
      api.errors.push(msg.message);
      $("error").textContent = msg.message;
      if (inFlight && inFlight.id === msg.id) { inFlight = null; pump(); }
    }
  }

  function connect() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    socket = new WebSocket(`${proto}//${location.host}/ws`);
    socket.binaryType = "arraybuffer";
    socket.onopen = () => { api.connected = true; send({ type: "hello" }); };
    socket.onmessage = (ev) => (typeof ev.data === "string" ? onText(JSON.parse(ev.data)) : onBinary(ev.data));
    socket.onclose = () => {
      api.connected = false;
      inFlight = null;
      $("error").textContent = "connection to the server lost; reload the page once it runs again";
    };
  }

  // ---- network ----------------------------------------------------------------------------------------------

  function openNetwork(name) {
    state.network = name;
    api.info = null;
    $("network").value = name;
    $("network-info").textContent = `loading ${name}…`;
    send({ type: "open", network: name });
  }

  function applyNetwork(info) {
    api.info = info;
    $("network-info").textContent =
      `${info.family} · ${info.img_resolution}px · z ${info.z_dim} · w ${info.w_dim} × ${info.num_ws}` +
      ({ class: ` · ${info.c_dim} classes`, "multi-label": ` · ${info.c_dim} classes, several at once`,
         continuous: ` · ${info.c_dim} continuous attributes` }[condEncoding(info)] || "");
    $("cutoff").max = info.num_ws;
    if (state.cutoff !== null && state.cutoff > info.num_ws) { state.cutoff = null; $("cutoff").value = ""; }
    $("mix-start").max = info.num_ws - 1;
    $("mix-end").max = info.num_ws;
    $("mix-end").placeholder = String(info.num_ws);
    state.mix_start = Math.min(state.mix_start, info.num_ws - 1);
    if (state.mix_end !== null && state.mix_end > info.num_ws) { state.mix_end = null; $("mix-end").value = ""; }
    buildConditioning(info);
    $("transform-box").hidden = !info.has_transform;
    if (!info.has_transform) { state.animate = false; $("animate").checked = false; }
    $("noise-box").hidden = !info.has_noise;
    const layer = $("layer");
    layer.innerHTML = "";
    for (const l of info.layers) {
      const label = l.name === "output" ? "output image" : `${l.name} (${l.channels}×${l.size[0]}×${l.size[1]})`;
      layer.add(new Option(label, l.name));
    }
    state.layer = "output";
    layerChanged();
    const dirs = $("directions");
    dirs.innerHTML = "";
    dirs.add(new Option("none", ""));
    for (const d of info.directions) dirs.add(new Option(`${d.name} (${d.method}, ${d.count})`, d.name));
    $("edit-box").hidden = info.directions.length === 0;
    state.directions = null;
    buildEdits();
    scheduleRender();
  }

  // ---- conditioning: one class, a set of classes, or one value per attribute --------------------------------

  // What the network's c holds (the server sends it): null (unconditional), "class", "multi-label", "continuous".
  function condEncoding(info) { return info.c_dim > 0 ? (info.cond_encoding || "class") : null; }

  function buildConditioning(info) {
    const enc = condEncoding(info);
    const n = info.c_dim;
    $("class-box").hidden = enc === null;
    $("cond-class").hidden = enc !== "class";
    $("cond-multi").hidden = enc !== "multi-label";
    $("cond-continuous").hidden = enc !== "continuous";
    $("class-legend").textContent = { class: "Class", "multi-label": `Classes (0–${n - 1})`,
                                      continuous: `Attributes (${n})` }[enc] || "Class";
    $("class").max = Math.max(0, n - 1);
    state.class_idx = Math.min(state.class_idx, Math.max(0, n - 1));
    state.classes = state.classes.filter((k) => k < n);
    $("classes").value = state.classes.join(", ");
    $("classes").classList.remove("invalid");
    const checks = $("class-checks");
    checks.innerHTML = "";
    if (enc === "multi-label" && n <= MAX_CLASS_CHECKS) {
      for (let k = 0; k < n; k++) {
        const label = document.createElement("label");
        const box = document.createElement("input");
        Object.assign(box, { type: "checkbox", id: `class-${k}`, checked: state.classes.includes(k) });
        box.addEventListener("change", () => {
          const rest = state.classes.filter((x) => x !== k);
          setClasses(box.checked ? [...rest, k] : rest);
        });
        label.append(box, String(k));
        checks.append(label);
      }
    }
    const dims = enc === "continuous" ? n : 0;  // a network of another c_dim starts from the zero vector
    if (state.cond_vector.length !== dims) state.cond_vector = new Array(dims).fill(0);
    const rows = $("cond-vector");
    rows.innerHTML = "";
    for (let k = 0; k < state.cond_vector.length; k++) {
      const row = document.createElement("label");
      row.className = "row";
      const name = document.createElement("span");
      name.textContent = `c[${k}]`;
      const slider = document.createElement("input");
      Object.assign(slider, { type: "range", id: `cond-${k}`, min: -COND_SLIDER_RANGE, max: COND_SLIDER_RANGE,
                              step: 0.01, value: state.cond_vector[k] });
      const number = document.createElement("input");
      Object.assign(number, { type: "number", id: `cond-${k}-value`, step: "any", value: state.cond_vector[k] });
      number.setAttribute("aria-label", `attribute ${k}`);
      slider.addEventListener("input", () => { number.value = slider.value; setCond(k, parseFloat(slider.value)); });
      number.addEventListener("input", () => {
        const v = parseFloat(number.value);
        if (!Number.isFinite(v)) return;  // half-typed ("-", "1e"): wait for a number
        slider.min = Math.min(parseFloat(slider.min), Math.floor(v));
        slider.max = Math.max(parseFloat(slider.max), Math.ceil(v));
        slider.value = v;
        setCond(k, v);
      });
      row.append(name, slider, number);
      rows.append(row);
    }
  }

  function setCond(k, v) { state.cond_vector[k] = v; scheduleRender(); }

  // A set of classes from the text field or the check boxes: distinct, sorted, both widgets kept in step.
  function setClasses(list, fromText = false) {
    state.classes = [...new Set(list)].sort((a, b) => a - b);
    if (!fromText) $("classes").value = state.classes.join(", ");
    for (let k = 0; k < (api.info ? api.info.c_dim : 0); k++) {
      const box = $(`class-${k}`);
      if (box) box.checked = state.classes.includes(k);
    }
    scheduleRender();
  }

  // "3, 7" -> [3, 7]. Out-of-range classes are sent (the server's message says the range); anything that is not
  // a class index marks the field and is left out.
  function parseClasses(text) {
    const tokens = text.split(/[\s,;]+/).filter((t) => t !== "");
    const good = tokens.filter((t) => /^\d+$/.test(t));
    $("classes").classList.toggle("invalid", good.length !== tokens.length);
    return good.map((t) => parseInt(t, 10));
  }

  // ---- widgets ----------------------------------------------------------------------------------------------

  function layerInfo() { return api.info.layers.find((l) => l.name === state.layer); }

  function layerChanged() {
    const isOutput = state.layer === "output";
    for (const id of ["view", "channel", "gain"]) $(id).disabled = isOutput;
    const l = layerInfo();
    $("channel").max = Math.max(0, l.channels - 1);
    if (state.channel > l.channels - 1) { state.channel = 0; $("channel").value = 0; }
  }

  function buildEdits() {
    const box = $("edits");
    box.innerHTML = "";
    const d = api.info.directions.find((x) => x.name === state.directions);
    state.edits = [];
    if (!d) return;
    const n = Math.min(d.count, MAX_EDIT_SLIDERS);
    state.edits = new Array(n).fill(0);
    for (let k = 0; k < n; k++) {
      const row = document.createElement("label");
      row.className = "row";
      const name = document.createElement("span");
      name.textContent = `#${k} (${d.values[k].toPrecision(3)})`;
      const slider = document.createElement("input");
      Object.assign(slider, { type: "range", min: -5, max: 5, step: 0.05, value: 0, id: `edit-${k}` });
      const out = document.createElement("output");
      out.textContent = "0.00σ";
      slider.addEventListener("input", () => {
        state.edits[k] = parseFloat(slider.value);
        out.textContent = `${state.edits[k].toFixed(2)}σ`;
        scheduleRender();
      });
      row.append(name, slider, out);
      box.append(row);
    }
  }

  function numberOr(el, fallback) {
    const v = parseFloat(el.value);
    return Number.isFinite(v) ? v : fallback;
  }

  function setSeed(v) {
    state.seed = Math.max(0, Math.round(v * 1000) / 1000);
    $("seed").value = state.seed;
    if (state.latent !== "seed") { state.latent = "seed"; $("latent-seed").checked = true; }
    scheduleRender();
  }

  function download(blob, name) {
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = name;
    document.body.append(a);
    a.click();
    setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
  }

  function bind() {
    $("network").addEventListener("change", (e) => openNetwork(e.target.value));
    $("seed").addEventListener("input", (e) => setSeed(numberOr(e.target, state.seed)));
    $("seed-snap").addEventListener("click", () => setSeed(Math.round(state.seed)));
    const pad = $("seed-drag");
    let drag = null;
    pad.addEventListener("pointerdown", (e) => {
      drag = { x: e.clientX, seed: state.seed };
      pad.setPointerCapture(e.pointerId);
      pad.classList.add("active");
    });
    pad.addEventListener("pointermove", (e) => { if (drag) setSeed(drag.seed + (e.clientX - drag.x) * SEED_PER_PIXEL); });
    const endDrag = () => { drag = null; pad.classList.remove("active"); };
    pad.addEventListener("pointerup", endDrag);
    pad.addEventListener("pointercancel", endDrag);
    for (const id of ["latent-seed", "latent-w"]) {
      $(id).addEventListener("change", (e) => { state.latent = e.target.value; scheduleRender(); });
    }
    $("upload-w").addEventListener("change", async (e) => {
      const file = e.target.files[0];
      if (!file) return;
      const bytes = new Uint8Array(await file.arrayBuffer());
      let bin = "";
      for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
      send({ type: "upload_w", id: nextId++, data: btoa(bin) });
    });
    $("psi").addEventListener("input", (e) => {
      state.psi = parseFloat(e.target.value);
      $("psi-value").textContent = state.psi.toFixed(2);
      scheduleRender();
    });
    $("cutoff").addEventListener("input", (e) => {
      const v = parseInt(e.target.value, 10);
      state.cutoff = Number.isFinite(v) ? v : null;
      scheduleRender();
    });
    $("noise").addEventListener("change", (e) => { state.noise_mode = e.target.value; scheduleRender(); });
    $("class").addEventListener("input", (e) => { state.class_idx = Math.max(0, Math.trunc(numberOr(e.target, 0))); scheduleRender(); });
    $("classes").addEventListener("input", (e) => setClasses(parseClasses(e.target.value), true));
    $("cond-reset").addEventListener("click", () => {
      state.cond_vector.forEach((_, k) => {
        $(`cond-${k}`).value = 0; $(`cond-${k}-value`).value = 0; state.cond_vector[k] = 0;
      });
      scheduleRender();
    });
    $("mix-enable").addEventListener("change", (e) => { state.mix = e.target.checked; scheduleRender(); });
    $("mix-seed").addEventListener("input", (e) => { state.mix_seed = Math.max(0, numberOr(e.target, 0)); scheduleRender(); });
    $("mix-start").addEventListener("input", (e) => { state.mix_start = Math.max(0, Math.trunc(numberOr(e.target, 0))); scheduleRender(); });
    $("mix-end").addEventListener("input", (e) => {
      const v = parseInt(e.target.value, 10);
      state.mix_end = Number.isFinite(v) ? v : null;
      scheduleRender();
    });
    const transformInput = () => {
      state.translate = [parseFloat($("tx").value), parseFloat($("ty").value)];
      state.rotate = parseFloat($("rotate").value);
      $("tx-value").textContent = state.translate[0].toFixed(2);
      $("ty-value").textContent = state.translate[1].toFixed(2);
      $("rotate-value").textContent = `${state.rotate.toFixed(1)}°`;
      scheduleRender();
    };
    for (const id of ["tx", "ty", "rotate"]) $(id).addEventListener("input", transformInput);
    $("transform-reset").addEventListener("click", () => {
      $("tx").value = 0; $("ty").value = 0; $("rotate").value = 0; transformInput();
    });
    $("speed").addEventListener("input", (e) => { state.speed = numberOr(e.target, 30); });
    let lastTick = null;
    const animate = (t) => {
      if (!state.animate) { lastTick = null; return; }
      if (lastTick !== null) {
        let r = state.rotate + state.speed * (t - lastTick) / 1000;
        r = ((r + 180) % 360 + 360) % 360 - 180;
        state.rotate = r;
        $("rotate").value = r;
        $("rotate-value").textContent = `${r.toFixed(1)}°`;
        scheduleRender();
      }
      lastTick = t;
      requestAnimationFrame(animate);
    };
    $("animate").addEventListener("change", (e) => { state.animate = e.target.checked; requestAnimationFrame(animate); });
    $("layer").addEventListener("change", (e) => { state.layer = e.target.value; layerChanged(); scheduleRender(); });
    $("view").addEventListener("change", (e) => { state.view = e.target.value; scheduleRender(); });
    $("channel").addEventListener("input", (e) => { state.channel = Math.max(0, Math.trunc(numberOr(e.target, 0))); scheduleRender(); });
    $("gain").addEventListener("input", (e) => {
      state.gain = Math.pow(10, parseFloat(e.target.value) / 2);
      $("gain-value").textContent = `×${state.gain.toFixed(2)}`;
      scheduleRender();
    });
    $("fft").addEventListener("change", (e) => { state.fft = e.target.checked; scheduleRender(); });
    $("fft-range").addEventListener("input", (e) => { state.fft_range_db = Math.min(200, Math.max(1, numberOr(e.target, 50))); scheduleRender(); });
    $("directions").addEventListener("change", (e) => { state.directions = e.target.value || null; buildEdits(); scheduleRender(); });
    $("edits-reset").addEventListener("click", () => { buildEdits(); scheduleRender(); });
    $("batch").addEventListener("input", (e) => { state.batch = Math.min(16, Math.max(1, Math.trunc(numberOr(e.target, 1)))); scheduleRender(); });
    $("format").addEventListener("change", (e) => { state.format = e.target.value; scheduleRender(); });
    $("capture-png").addEventListener("click", () => { captureNext = true; scheduleRender(); });
    $("capture-w").addEventListener("click", () => {
      if (api.info) send({ type: "get_w", id: nextId++, ...requestFields() });
    });
  }

  bind();
  connect();
})();
