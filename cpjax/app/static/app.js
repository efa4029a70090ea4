// The page of `python -m cpjax.app`: plain DOM and canvas, no library, nothing from outside.
// Canvases hold images at full resolution (CSS scales them), so a pointer position maps to an
// image pixel by the canvas's on-screen size; the server gets masks at the source's own size.
"use strict";

let INFO = null;   // GET /api/info

// ---------------------------------------------------------------------------------------------
// Server calls.

async function answer(response) {
  const text = await response.text();
  let value = null;
  try { value = JSON.parse(text); } catch (e) { /* not JSON: a proxy or a crash page */ }
  if (!response.ok) {
    throw new Error((value && value.error) || `the server answered ${response.status}`);
  }
  return value;
}

async function api(path, body) {
  const options = body === undefined ? {} : {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)};
  try {
    return await answer(await fetch(path, options));
  } catch (e) {
    if (e instanceof TypeError) throw new Error("the server does not answer; is it still running?");
    throw e;
  }
}

function checkUploadSize(blob, name) {
  if (INFO && blob.size > INFO.max_upload_bytes) {
    const mb = (n) => (n / 1048576).toFixed(1);
    throw new Error(`${name} is ${mb(blob.size)} MB but the app takes at most ` +
                    `${mb(INFO.max_upload_bytes)} MB; use a smaller file (or start the app with ` +
                    `a larger --max_upload_mb).`);
  }
}

async function postFile(path, blob, name) {
  checkUploadSize(blob, name);
  try {
    return await answer(await fetch(path, {method: "POST", body: blob}));
  } catch (e) {
    if (e instanceof TypeError) throw new Error("the server does not answer; is it still running?");
    throw e;
  }
}

function upload(blob, name, kind) {
  return postFile(`/api/upload?kind=${kind}&name=${encodeURIComponent(name)}`, blob, name);
}

const imageUrl = (id) => `/api/image/${id}.png`;

function loadImage(url) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error(`cannot show ${url}`));
    img.src = url;
  });
}

// ---------------------------------------------------------------------------------------------
// Small helpers.

function $(root, selector) { return root.querySelector(selector); }

function showError(box, error) {
  box.textContent = error ? (error.message || String(error)) : "";
  box.hidden = !error;
}

function canvasPoint(canvas, event) {
  const r = canvas.getBoundingClientRect();
  return {x: (event.clientX - r.left) * canvas.width / r.width,
          y: (event.clientY - r.top) * canvas.height / r.height,
          perPixel: canvas.width / r.width};
}

function fillSelect(select, values, labels) {
  select.replaceChildren(...values.map((v, i) => new Option(labels ? labels[i] : v, v)));
}

async function busy(button, status, work, message) {
  button.disabled = true;
  const start = performance.now();
  const tick = () => {
    status.textContent = `${message} ${((performance.now() - start) / 1000).toFixed(0)} s`;
  };
  tick();
  const timer = setInterval(tick, 500);
  try {
    const note = await work();
    status.textContent = `${note ? note + ", " : ""}done in ` +
                         `${((performance.now() - start) / 1000).toFixed(1)} s`;
  } catch (e) {
    status.textContent = "";
    throw e;
  } finally {
    clearInterval(timer);
    button.disabled = false;
  }
}

// A select of the bundled photos plus a file input: calls onImage(held image) either way.
function imagePicker(select, input, initial, onImage, onError) {
  fillSelect(select, ["", ...INFO.samples], ["(upload)", ...INFO.samples]);
  select.value = initial;
  select.addEventListener("change", async () => {
    if (!select.value) return;
    try { onImage(await api("/api/sample", {name: select.value})); } catch (e) { onError(e); }
  });
  input.addEventListener("change", async () => {
    const file = input.files[0];
    if (!file) return;
    try {
      const held = await upload(file, file.name, "image");
      select.value = "";
      onImage(held);
    } catch (e) { onError(e); }
    input.value = "";
  });
  return initial ? api("/api/sample", {name: initial}).then(onImage, onError) : Promise.resolve();
}

function resultFigure(result, extra) {
  const figure = document.createElement("figure");
  figure.className = "result";
  figure.dataset.method = result.method;
  figure.dataset.id = result.id;
  const img = document.createElement("img");
  img.src = imageUrl(result.id);
  img.alt = result.label;
  const caption = document.createElement("figcaption");
  const label = document.createElement("span");
  label.textContent = `${result.label}` + (result.seconds ? ` · ${result.seconds.toFixed(2)} s` : "");
  const link = document.createElement("a");
  link.href = imageUrl(result.id) + "?download=1";
  link.download = result.name;
  link.textContent = `PNG ${result.width}x${result.height}`;
  caption.append(label, link, ...(extra || []));
  figure.append(img, caption);
  return figure;
}

// ---------------------------------------------------------------------------------------------
// Drawing a mask on an image: brush, eraser, polygon; or a click handed to `onPick`.

class MaskEditor {
  constructor(canvas, toolbar, {onChange, onPick} = {}) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.mask = document.createElement("canvas");     // red where the region is, full size
    this.mask.getContext("2d", {willReadFrequently: true});
    this.onChange = onChange || (() => {});
    this.onPick = onPick;
    this.image = null;
    this.held = null;
    this.polygon = [];
    this.stroke = null;
    this.toolbar = toolbar;
    canvas.addEventListener("pointerdown", (e) => this.down(e));
    canvas.addEventListener("pointermove", (e) => this.move(e));
    canvas.addEventListener("pointerup", (e) => this.up(e));
    canvas.addEventListener("dblclick", () => this.closePolygon());
    $(toolbar, ".clear").addEventListener("click", () => this.clear());
    toolbar.parentElement.addEventListener("change", (e) => {
      if (e.target.type === "radio") { this.polygon = []; this.render(); }
    });
  }

  get tool() {
    const checked = this.toolbar.parentElement.querySelector("input[type=radio]:checked");
    return checked ? checked.value : "brush";
  }

  async setImage(held) {
    this.image = await loadImage(imageUrl(held.id));
    this.held = held;
    for (const c of [this.canvas, this.mask]) { c.width = held.width; c.height = held.height; }
    this.polygon = [];
    this.changed();
  }

  clear() {
    this.mask.getContext("2d").clearRect(0, 0, this.mask.width, this.mask.height);
    this.polygon = [];
    this.changed();
  }

  changed() { this.version = (this.version || 0) + 1; this.render(); this.onChange(); }

  render() {
    const ctx = this.ctx;
    ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
    if (!this.image) return;
    ctx.drawImage(this.image, 0, 0);
    ctx.globalAlpha = 0.45;
    ctx.drawImage(this.mask, 0, 0);
    ctx.globalAlpha = 1;
    if (this.polygon.length) {
      const s = this.canvas.width / this.canvas.getBoundingClientRect().width || 1;
      ctx.strokeStyle = "#ffdd00";
      ctx.lineWidth = 2 * s;
      ctx.beginPath();
      this.polygon.forEach((p, i) => (i ? ctx.lineTo(p.x, p.y) : ctx.moveTo(p.x, p.y)));
      ctx.stroke();
      ctx.fillStyle = "#ffdd00";
      for (const p of this.polygon) ctx.fillRect(p.x - 3 * s, p.y - 3 * s, 6 * s, 6 * s);
    }
  }

  radius(p) { return Number($(this.toolbar, ".brush").value) / 2 * p.perPixel; }

  paintTo(p) {
    const ctx = this.mask.getContext("2d");
    ctx.globalCompositeOperation = this.tool === "eraser" ? "destination-out" : "source-over";
    ctx.strokeStyle = ctx.fillStyle = "#ff0000";
    ctx.lineCap = ctx.lineJoin = "round";
    ctx.lineWidth = 2 * this.radius(p);
    ctx.beginPath();
    ctx.moveTo(this.stroke.x, this.stroke.y);
    ctx.lineTo(p.x, p.y);
    ctx.stroke();
    this.stroke = p;
    this.render();
  }

  down(e) {
    if (!this.image || e.button !== 0) return;
    const p = canvasPoint(this.canvas, e);
    const tool = this.tool;
    if (tool === "pick") {
      if (this.onPick) this.onPick(Math.floor(p.x), Math.floor(p.y));
    } else if (tool === "polygon") {
      const first = this.polygon[0];
      if (first && this.polygon.length >= 3 &&
          Math.hypot(first.x - p.x, first.y - p.y) < 10 * p.perPixel) {
        this.closePolygon();
      } else {
        this.polygon.push(p);
        this.render();
      }
    } else {
      this.canvas.setPointerCapture(e.pointerId);
      this.stroke = p;
      this.paintTo(p);
    }
  }

  move(e) { if (this.stroke) this.paintTo(canvasPoint(this.canvas, e)); }

  up() { if (this.stroke) { this.stroke = null; this.changed(); } }

  closePolygon() {
    if (this.polygon.length < 3) return;
    const ctx = this.mask.getContext("2d");
    ctx.globalCompositeOperation = "source-over";
    ctx.fillStyle = "#ff0000";
    ctx.beginPath();
    this.polygon.forEach((p, i) => (i ? ctx.lineTo(p.x, p.y) : ctx.moveTo(p.x, p.y)));
    ctx.closePath();
    ctx.fill();
    this.polygon = [];
    this.changed();
  }

  // The region's pixels: alpha >= 128 (anti-aliased brush edges count when at least half on).
  pixels() {
    const data = this.mask.getContext("2d").getImageData(0, 0, this.mask.width, this.mask.height).data;
    const inside = new Uint8Array(this.mask.width * this.mask.height);
    for (let i = 0; i < inside.length; i++) inside[i] = data[4 * i + 3] >= 128 ? 1 : 0;
    return inside;
  }

  // {x0, y0, w, h} of the region in image pixels, or null when nothing is drawn.
  box() {
    const inside = this.pixels(), w = this.mask.width;
    let x0 = Infinity, y0 = Infinity, x1 = -1, y1 = -1;
    for (let i = 0; i < inside.length; i++) {
      if (!inside[i]) continue;
      const x = i % w, y = (i - x) / w;
      if (x < x0) x0 = x; if (x > x1) x1 = x; if (y < y0) y0 = y; if (y > y1) y1 = y;
    }
    return x1 < 0 ? null : {x0, y0, w: x1 - x0 + 1, h: y1 - y0 + 1};
  }

  // The region cut out of the image (transparent elsewhere), cropped to `box`.
  cutout(box) {
    const inside = this.pixels();
    const out = document.createElement("canvas");
    out.width = box.w; out.height = box.h;
    const ctx = out.getContext("2d");
    ctx.drawImage(this.image, -box.x0, -box.y0);
    const data = ctx.getImageData(0, 0, box.w, box.h);
    for (let y = 0; y < box.h; y++) {
      for (let x = 0; x < box.w; x++) {
        if (!inside[(y + box.y0) * this.mask.width + x + box.x0]) data.data[4 * (y * box.w + x) + 3] = 0;
      }
    }
    ctx.putImageData(data, 0, 0);
    return out;
  }

  // The region as a black/white PNG the size of the image.
  maskBlob() {
    const inside = this.pixels();
    const out = document.createElement("canvas");
    out.width = this.mask.width; out.height = this.mask.height;
    const ctx = out.getContext("2d");
    const data = ctx.createImageData(out.width, out.height);
    for (let i = 0; i < inside.length; i++) {
      const v = inside[i] ? 255 : 0;
      data.data[4 * i] = data.data[4 * i + 1] = data.data[4 * i + 2] = v;
      data.data[4 * i + 3] = 255;
    }
    ctx.putImageData(data, 0, 0);
    return new Promise((resolve) => out.toBlob(resolve, "image/png"));
  }

  // Replaces the region by a held mask (white = region).
  async setMask(held) {
    const img = await loadImage(imageUrl(held.id));
    const ctx = this.mask.getContext("2d");
    ctx.globalCompositeOperation = "source-over";
    ctx.clearRect(0, 0, this.mask.width, this.mask.height);
    ctx.drawImage(img, 0, 0, this.mask.width, this.mask.height);
    const data = ctx.getImageData(0, 0, this.mask.width, this.mask.height);
    for (let i = 0; i < data.data.length; i += 4) {
      const on = data.data[i] >= 128;
      data.data[i] = 255; data.data[i + 1] = data.data[i + 2] = 0; data.data[i + 3] = on ? 255 : 0;
    }
    ctx.putImageData(data, 0, 0);
    this.polygon = [];
    this.changed();
  }

  // The held id of the current mask, uploading it when it changed since the last call.
  async heldMask() {
    if (this.uploaded && this.uploaded.version === this.version) return this.uploaded.held;
    const held = await upload(await this.maskBlob(), "the drawn mask.png", "mask");
    this.uploaded = {version: this.version, held};
    return held;
  }
}

// ---------------------------------------------------------------------------------------------
// Placing the region on the target: click to centre it, drag to move, wheel or slider to scale.

class Placer {
  constructor(canvas, scaleInput, scaleOutput, where) {
    Object.assign(this, {canvas, scaleInput, scaleOutput, where});
    this.ctx = canvas.getContext("2d");
    this.image = null;
    this.region = null;     // {cutout, box}
    this.pos = null;        // top-left of the placed region, target pixels
    this.drag = null;
    canvas.addEventListener("pointerdown", (e) => this.down(e));
    canvas.addEventListener("pointermove", (e) => this.move(e));
    canvas.addEventListener("pointerup", () => { this.drag = null; });
    canvas.addEventListener("wheel", (e) => {
      if (!this.region) return;
      e.preventDefault();
      this.setScale(this.scale * (e.deltaY < 0 ? 1.1 : 1 / 1.1));
    }, {passive: false});
    scaleInput.addEventListener("input", () => this.setScale(Number(scaleInput.value)));
  }

  get scale() { return Number(this.scaleInput.value); }

  size() { return {w: this.region.box.w * this.scale, h: this.region.box.h * this.scale}; }

  async setImage(held) {
    this.image = await loadImage(imageUrl(held.id));
    this.held = held;
    this.canvas.width = held.width; this.canvas.height = held.height;
    this.pos = null;
    this.render();
  }

  setRegion(region) {
    this.region = region;
    this.render();
  }

  setScale(scale) {
    scale = Math.min(Number(this.scaleInput.max), Math.max(Number(this.scaleInput.min), scale));
    if (this.pos && this.region) {      // keep the centre where it is
      const before = this.size();
      this.scaleInput.value = scale;
      const after = this.size();
      this.pos = {x: this.pos.x + (before.w - after.w) / 2, y: this.pos.y + (before.h - after.h) / 2};
    }
    this.scaleInput.value = scale;
    this.render();
  }

  down(e) {
    if (!this.image || !this.region || e.button !== 0) return;
    const p = canvasPoint(this.canvas, e);
    const s = this.size();
    const inside = this.pos && p.x >= this.pos.x && p.x < this.pos.x + s.w &&
                   p.y >= this.pos.y && p.y < this.pos.y + s.h;
    if (!inside) this.pos = {x: p.x - s.w / 2, y: p.y - s.h / 2};
    this.drag = {dx: p.x - this.pos.x, dy: p.y - this.pos.y};
    this.canvas.setPointerCapture(e.pointerId);
    this.render();
  }

  move(e) {
    if (!this.drag) return;
    const p = canvasPoint(this.canvas, e);
    this.pos = {x: p.x - this.drag.dx, y: p.y - this.drag.dy};
    this.render();
  }

  // What the server needs: the region's top-left corner on the target and the scale.
  placement() {
    return this.pos && {x: Math.round(this.pos.x), y: Math.round(this.pos.y), scale: this.scale};
  }

  render() {
    const ctx = this.ctx;
    this.scaleOutput.textContent = this.scale.toFixed(2);
    ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
    if (!this.image) return;
    ctx.drawImage(this.image, 0, 0);
    const p = this.placement();
    this.where.textContent = p && this.region ? `at x=${p.x}, y=${p.y}` : "click to place the region";
    if (!p || !this.region) return;
    const s = this.size();
    ctx.drawImage(this.region.cutout, p.x, p.y, s.w, s.h);
    const px = this.canvas.width / this.canvas.getBoundingClientRect().width || 1;
    ctx.setLineDash([6 * px, 4 * px]);
    ctx.lineWidth = 1.5 * px;
    ctx.strokeStyle = "#ffdd00";
    ctx.strokeRect(p.x, p.y, s.w, s.h);
    ctx.setLineDash([]);
  }
}

// ---------------------------------------------------------------------------------------------
// Paste / clone and Segment and clone: one compositor each.

function maskTools(section) {
  const tools = $(section, ".mask-tools");
  tools.append(document.getElementById("mask-tools").content.cloneNode(true));
  for (const radio of section.querySelectorAll("input[name=tool]")) radio.name = `${section.id}-tool`;
  return tools;
}

// Fills a hint box with lines "name: text", `quoted` parts of the text shown as code.
function showHints(box, lines) {
  box.hidden = !lines.length;
  box.replaceChildren(...lines.map(([name, text], i) => {
    const line = document.createElement("span");
    const strong = document.createElement("strong");
    strong.textContent = `${name}: `;
    line.append(...(i ? [document.createElement("br")] : []), strong);
    text.split("`").forEach((part, k) => {
      const node = k % 2 ? document.createElement("code") : document.createTextNode(part);
      if (k % 2) node.textContent = part;
      line.append(node);
    });
    return line;
  }));
}

function setHint(section, kind) {
  const model = INFO.models[kind];
  showHints($(section, ".hint"), model.enabled ? [] : [[`${section.dataset.tool} is off`, model.hint]]);
  return model.enabled;
}

async function compositor(section, {segment}) {
  section.append(document.getElementById("compositor").content.cloneNode(true));
  $(section, ".intro").textContent = section.dataset.intro;
  const errorBox = $(section, ".error");
  const onError = (e) => showError(errorBox, e);
  const tools = maskTools(section);
  const placer = new Placer($(section, ".placer"), $(section, ".scale"), $(section, ".scale-value"),
                            $(section, ".where"));
  const editor = new MaskEditor($(section, ".editor"), tools, {
    onChange: () => {
      const box = editor.box();
      placer.setRegion(box && {box, cutout: editor.cutout(box)});
    },
    onPick: (x, y) => runSegment({x, y}),
  });

  // Methods, domain, harmonisation.
  const fieldset = $(section, ".methods");
  for (const m of INFO.methods) {
    const label = document.createElement("label");
    const box = document.createElement("input");
    box.type = "checkbox";
    box.value = m.id;
    box.checked = m.id === "cut" || m.id === "poisson_normal";
    box.disabled = m.id === "cut" || !m.enabled;
    label.append(box, ` ${m.label}`);
    if (!m.enabled) { label.classList.add("disabled"); label.title = m.hint; }
    fieldset.append(label);
  }
  fillSelect($(section, ".domain"), INFO.domains);
  const harmonizeBox = $(section, ".harmonize");
  const harmonizer = INFO.models.harmonize;
  harmonizeBox.disabled = !harmonizer.enabled;
  if (!harmonizer.enabled) {
    const label = $(section, ".harmonize-on-top");
    label.classList.add("disabled");
    label.title = harmonizer.hint;
  }
  const hints = INFO.methods.filter((m) => !m.enabled).map((m) => [`${m.label} is off`, m.hint]);
  if (!harmonizer.enabled) hints.push(["harmonize on top is off", harmonizer.hint]);

  // Segmentation.
  if (segment) {
    section.dataset.tool = "Segment and clone";
    const segmentTools = $(section, ".segment-tools");
    segmentTools.hidden = false;
    const enabled = setHint(section, "segment");
    fillSelect($(section, ".class"), INFO.classes);
    for (const control of segmentTools.querySelectorAll("input, select, button")) control.disabled = !enabled;
    $(section, ".use-class").addEventListener("click", () => runSegment({class: $(section, ".class").value}));
    $(section, ".largest").addEventListener("click", () => runSegment({}));
  } else {
    showHints($(section, ".hint"), hints);
  }

  async function runSegment(request) {
    showError(errorBox, null);
    const status = $(section, ".status");
    try {
      await busy($(section, ".run"), status, async () => {
        const held = await api("/api/segment", {
          image: editor.held && editor.held.id, dilation: Number($(section, ".dilation").value),
          ...request});
        await editor.setMask(held);
        return `${held.class}: ${held.pixels} px`;
      }, "segmenting…");
    } catch (e) { onError(e); }
  }

  async function run() {
    showError(errorBox, null);
    const status = $(section, ".status");
    try {
      await busy($(section, ".run"), status, async () => {
        if (!editor.box()) {
          throw new Error("no region drawn on the source; paint it with the brush or draw a polygon.");
        }
        const place = placer.placement();
        if (!place) throw new Error("the region has no place on the target yet; click or drag on the target.");
        const methods = [...fieldset.querySelectorAll("input:checked")].map((b) => b.value);
        const mask = await editor.heldMask();
        const out = await api("/api/paste", {
          source: editor.held.id, target: placer.held.id, mask: mask.id, ...place, methods,
          domain: $(section, ".domain").value, harmonize: harmonizeBox.checked,
          seed: Number($(section, ".seed").value)});
        showResults(out);
      }, "running (the first run of a method at a new size compiles it)…");
    } catch (e) { onError(e); }
  }

  function showResults(out) {
    const results = $(section, ".results");
    results.replaceChildren(...out.results.map((r) => {
      if (!harmonizer.enabled) return resultFigure(r);
      const send = document.createElement("button");
      send.textContent = "harmonize this";
      send.title = "open this result and its region in Harmonize";
      send.addEventListener("click", () => HARMONIZE.open(r, out.mask));
      return resultFigure(r, [send]);
    }));
  }

  $(section, ".run").addEventListener("click", run);
  await Promise.all([
    imagePicker($(section, ".pick-source"), $(section, ".upload-source"), "chelsea",
                (held) => editor.setImage(held).catch(onError), onError),
    imagePicker($(section, ".pick-target"), $(section, ".upload-target"), "astronaut",
                (held) => placer.setImage(held).catch(onError), onError),
  ]);
}

// ---------------------------------------------------------------------------------------------
// Harmonize.

const HARMONIZE = {
  async init(section) {
    this.section = section;
    section.dataset.tool = "Harmonize";
    const enabled = setHint(section, "harmonize");
    const errorBox = $(section, ".error");
    const onError = (e) => showError(errorBox, e);
    this.editor = new MaskEditor($(section, ".editor"), maskTools(section));
    const run = $(section, ".run");
    run.disabled = !enabled;
    run.addEventListener("click", async () => {
      showError(errorBox, null);
      try {
        await busy(run, $(section, ".status"), async () => {
          if (!this.editor.box()) {
            throw new Error("no foreground marked; paint the pasted region with the brush or draw a polygon.");
          }
          const mask = await this.editor.heldMask();
          const out = await api("/api/harmonize", {composite: this.editor.held.id, mask: mask.id});
          $(section, ".results").replaceChildren(...out.results.map((r) => resultFigure(r)));
        }, "harmonizing (the first run at a new size compiles)…");
        run.disabled = !enabled;
      } catch (e) { onError(e); run.disabled = !enabled; }
    });
    $(section, ".upload-mask").addEventListener("change", async (e) => {
      const file = e.target.files[0];
      if (!file) return;
      try {
        await this.editor.setMask(await upload(file, file.name, "mask"));
        showError(errorBox, null);
      } catch (err) { onError(err); }
      e.target.value = "";
    });
    await imagePicker($(section, ".pick"), $(section, ".upload"), "coffee",
                      (held) => this.editor.setImage(held).catch(onError), onError);
  },

  // Opens a paste result (composite) with its placed region as the mask.
  async open(result, mask) {
    selectTab("harmonize");
    $(this.section, ".pick").value = "";
    await this.editor.setImage(result);
    await this.editor.setMask(mask);
  },
};

// ---------------------------------------------------------------------------------------------
// Inpaint video: a box on the first frame moving on a straight line, or uploaded masks.

class BoxEditor {
  constructor(canvas, modeRoot, onChange) {
    Object.assign(this, {canvas, modeRoot, onChange});
    this.ctx = canvas.getContext("2d");
    this.start = this.end = null;       // [x0, y0, x1, y1], frame pixels
    this.drag = null;
    canvas.addEventListener("pointerdown", (e) => this.down(e));
    canvas.addEventListener("pointermove", (e) => this.move(e));
    canvas.addEventListener("pointerup", () => { this.drag = null; this.onChange(); });
  }

  get mode() { return this.modeRoot.querySelector("input[name=box-mode]:checked").value; }

  async setFrame(held) {
    this.image = await loadImage(imageUrl(held.id));
    this.canvas.width = held.width; this.canvas.height = held.height;
    this.start = this.end = null;
    this.render();
  }

  down(e) {
    if (!this.image || e.button !== 0) return;
    const p = canvasPoint(this.canvas, e);
    this.canvas.setPointerCapture(e.pointerId);
    if (this.mode === "end" && this.end) {
      this.drag = {move: true, x: p.x, y: p.y, from: [...this.end]};
    } else {
      this.drag = {move: false, x: p.x, y: p.y};
      this.start = this.end = null;
    }
  }

  move(e) {
    if (!this.drag) return;
    const p = canvasPoint(this.canvas, e);
    const clamp = (v, hi) => Math.max(0, Math.min(hi, Math.round(v)));
    const W = this.canvas.width, H = this.canvas.height;
    if (this.drag.move) {
      const [x0, y0, x1, y1] = this.drag.from;
      const dx = Math.max(-x0, Math.min(W - x1, Math.round(p.x - this.drag.x)));
      const dy = Math.max(-y0, Math.min(H - y1, Math.round(p.y - this.drag.y)));
      this.end = [x0 + dx, y0 + dy, x1 + dx, y1 + dy];
    } else {
      const xs = [clamp(this.drag.x, W), clamp(p.x, W)].sort((a, b) => a - b);
      const ys = [clamp(this.drag.y, H), clamp(p.y, H)].sort((a, b) => a - b);
      if (xs[1] > xs[0] && ys[1] > ys[0]) {
        this.start = [xs[0], ys[0], xs[1], ys[1]];
        this.end = [...this.start];
      }
    }
    this.render();
  }

  render() {
    const ctx = this.ctx;
    ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
    if (!this.image) return;
    ctx.drawImage(this.image, 0, 0);
    if (!this.start) return;
    const px = this.canvas.width / this.canvas.getBoundingClientRect().width || 1;
    const rect = (b) => [b[0], b[1], b[2] - b[0], b[3] - b[1]];
    ctx.fillStyle = "rgba(255, 0, 0, 0.35)";
    ctx.fillRect(...rect(this.start));
    ctx.lineWidth = 2 * px;
    ctx.strokeStyle = "#ff3b30";
    ctx.strokeRect(...rect(this.start));
    if (this.end.some((v, i) => v !== this.start[i])) {
      ctx.setLineDash([6 * px, 4 * px]);
      ctx.strokeStyle = "#00c8ff";
      ctx.strokeRect(...rect(this.end));
      ctx.beginPath();
      ctx.moveTo((this.start[0] + this.start[2]) / 2, (this.start[1] + this.start[3]) / 2);
      ctx.lineTo((this.end[0] + this.end[2]) / 2, (this.end[1] + this.end[3]) / 2);
      ctx.stroke();
      ctx.setLineDash([]);
    }
  }
}

const VIDEO = {
  async init(section) {
    this.section = section;
    section.dataset.tool = "Inpaint video";
    this.enabled = setHint(section, "video");
    const errorBox = this.errorBox = $(section, ".error");
    const onError = (e) => showError(errorBox, e);
    this.boxes = new BoxEditor($(section, ".editor"), section, () => {});
    this.masks = 0;
    const run = $(section, ".run");
    run.disabled = !this.enabled;
    run.addEventListener("click", () => this.run().catch(onError));
    const select = $(section, ".pick");
    fillSelect(select, ["", ...INFO.videos], ["(upload)", ...INFO.videos]);
    select.value = INFO.videos[0] || "";
    select.addEventListener("change", () => {
      if (select.value) this.open(`/api/video?bundled=${encodeURIComponent(select.value)}`).catch(onError);
    });
    $(section, ".upload").addEventListener("change", async (e) => {
      const file = e.target.files[0];
      if (!file) return;
      select.value = "";
      await this.open(`/api/video?name=${encodeURIComponent(file.name)}`, file, file.name).catch(onError);
      e.target.value = "";
    });
    $(section, ".upload-masks").addEventListener("change", (e) => this.uploadMasks(e.target).catch(onError));
    $(section, ".clear-masks").addEventListener("click", () => this.setMasks(0));
  },

  // Opens the default clip the first time the tab is shown (reading it takes a second).
  async show() {
    if (this.opened || !INFO.videos.length) return;
    this.opened = true;
    await this.open(`/api/video?bundled=${encodeURIComponent(INFO.videos[0])}`)
        .catch((e) => showError(this.errorBox, e));
  },

  async open(path, file, name) {
    showError(this.errorBox, null);
    const status = $(this.section, ".status");
    status.textContent = "reading the clip…";
    try {
      this.clip = file ? await postFile(path, file, name) : await api(path, {});
    } finally { status.textContent = ""; }
    const c = this.clip;
    $(this.section, ".clip-info").textContent = `${c.name}: ${c.frames} frames, ${c.height}x${c.width}` +
        (c.released ? " (prepared as the released test code does)" : "");
    $(this.section, ".frames").max = c.frames;
    $(this.section, ".frames").value = c.default_frames;
    $(this.section, ".size").value = c.size;
    this.setMasks(0);
    await this.boxes.setFrame(c.first);
  },

  setMasks(count) {
    this.masks = count;
    $(this.section, ".masks-info").textContent = count ? `${count} masks uploaded` : "";
    $(this.section, ".clear-masks").hidden = !count;
  },

  async uploadMasks(input) {
    if (!this.clip) throw new Error("pick or upload a clip first.");
    const files = [...input.files];
    let count = 0;
    for (const [i, file] of files.entries()) {
      const out = await postFile(`/api/video/${this.clip.video}/mask?name=${encodeURIComponent(file.name)}` +
                                 (i === 0 ? "&first=1" : ""), file, file.name);
      count = out.masks;
    }
    input.value = "";
    this.setMasks(count);
  },

  async run() {
    showError(this.errorBox, null);
    const s = this.section;
    if (!this.clip) throw new Error("pick or upload a clip first.");
    if (!this.masks && !this.boxes.start) {
      throw new Error("no hole drawn; drag a box over what to remove on the first frame (or upload masks).");
    }
    const run = $(s, ".run");
    run.disabled = true;
    try {
      const job = await api("/api/inpaint", {
        video: this.clip.video, use_masks: this.masks > 0, box: this.boxes.start, end: this.boxes.end,
        frames: Number($(s, ".frames").value), size: $(s, ".size").value.trim(),
        dilate: Number($(s, ".dilate").value), fps: Number($(s, ".fps").value)});
      await this.follow(job.job);
    } finally { run.disabled = !this.enabled; }
  },

  async follow(jobId) {
    const s = this.section, bar = $(s, ".progress"), status = $(s, ".status");
    bar.hidden = false;
    for (;;) {
      const job = await api(`/api/job/${jobId}`);
      bar.max = job.total; bar.value = job.done;
      const eta = job.done ? job.seconds / job.done * (job.total - job.done) : null;
      status.textContent = job.state === "queued" ? "waiting for the previous job…" :
          `${job.done}/${job.total} frame steps (two passes), ${job.seconds.toFixed(0)} s` +
          (eta !== null && job.state === "running" ? `, about ${eta.toFixed(0)} s left` : "") +
          (job.done === 0 && job.state === "running" ? " (the first frame compiles the network)" : "");
      if (job.state === "error") { bar.hidden = true; throw new Error(job.error); }
      if (job.state === "done") {
        bar.hidden = true;
        status.textContent = `done: ${job.frames} frames at ${job.size[0]}x${job.size[1]} in ${job.seconds.toFixed(1)} s`;
        this.player(jobId, job);
        return;
      }
      await new Promise((r) => setTimeout(r, 400));
    }
  },

  // The input (holes tinted red) and the result, frame by frame, with the MP4 to download.
  player(jobId, job) {
    const base = `/api/job/${jobId}`;
    const url = (which, i) => `${base}/${which}/${String(i).padStart(5, "0")}.png`;
    const figures = ["input", "result"].map((which) => {
      const f = resultFigure({id: "", method: which, label: which === "input" ? "input and hole" : "inpainted",
                              name: "", width: job.size[1], height: job.size[0]});
      f.querySelector("a").remove();
      f.querySelector("img").src = url(which, 0);
      return f;
    });
    const controls = document.createElement("div");
    controls.className = "player";
    const play = document.createElement("button");
    const slider = Object.assign(document.createElement("input"), {type: "range", min: 0, max: job.frames - 1, value: 0});
    const label = document.createElement("span");
    const mp4 = Object.assign(document.createElement("a"), {href: `${base}/inpainted.mp4`, download: "inpainted.mp4",
                                                             textContent: "download inpainted.mp4"});
    const show = (i) => {
      slider.value = i;
      label.textContent = `frame ${i + 1}/${job.frames}`;
      figures.forEach((f, k) => { f.querySelector("img").src = url(k ? "result" : "input", i); });
    };
    let timer = null;
    const fps = Number($(this.section, ".fps").value) || 10;
    play.textContent = "play";
    play.addEventListener("click", () => {
      if (timer) { clearInterval(timer); timer = null; play.textContent = "play"; return; }
      play.textContent = "pause";
      timer = setInterval(() => show((Number(slider.value) + 1) % job.frames), 1000 / fps);
    });
    slider.addEventListener("input", () => show(Number(slider.value)));
    controls.append(play, slider, label, ...(job.mp4 ? [mp4] : []));
    $(this.section, ".results").replaceChildren(controls, ...figures);
    show(0);
  },
};

// ---------------------------------------------------------------------------------------------
// Tabs and start-up.

function selectTab(name) {
  for (const tab of document.querySelectorAll("[role=tab]")) {
    tab.setAttribute("aria-selected", String(tab.dataset.tab === name));
  }
  for (const panel of document.querySelectorAll("[role=tabpanel]")) panel.hidden = panel.id !== name;
  if (name === "video") VIDEO.show();
}

async function start() {
  const pageError = document.getElementById("page-error");
  window.addEventListener("unhandledrejection", (e) => showError(pageError, e.reason));
  try {
    INFO = await api("/api/info");
  } catch (e) {
    showError(pageError, e);
    return;
  }
  for (const tab of document.querySelectorAll("[role=tab]")) {
    tab.addEventListener("click", () => selectTab(tab.dataset.tab));
  }
  await Promise.all([
    compositor(document.getElementById("paste"), {segment: false}),
    compositor(document.getElementById("segment"), {segment: true}),
    HARMONIZE.init(document.getElementById("harmonize")),
    VIDEO.init(document.getElementById("video")),
  ]);
  document.body.dataset.ready = "true";
}

start();
