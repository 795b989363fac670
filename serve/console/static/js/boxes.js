// The box editor of the labeller: an SVG over the image (viewBox = the image's natural pixels, so boxes
// scale with it) where a drag on the image draws a box, a click selects one (four corner handles), a drag
// moves the selected box or resizes it by a handle. Boxes are kept normalized to the image (top, left,
// bottom, right in 0..1, Clarifai's bounding_box); positions are read from the displayed image's size, so
// the result does not depend on how large the image is shown. The editor calls back on each finished
// gesture; saving is the page's job (it answers the new annotation's id).
import { svg } from "./ui.js";

const MIN_PX = 3;  // a drag smaller than this (displayed pixels) is a click, not a box
const clamp = (x) => Math.min(1, Math.max(0, x));

export class BoxEditor {
  /** new BoxEditor(svgEl, imgEl, {onCreate(box), onChange(box, before), onSelect(box|null), colorOf(concept)}) */
  constructor(svgEl, imgEl, callbacks) {
    this.svg = svgEl;
    this.img = imgEl;
    this.cb = callbacks;
    this.boxes = [];       // {id, concept, top, left, bottom, right}
    this.selectedId = null;
    this.gesture = null;
    svgEl.addEventListener("pointerdown", (e) => this.down(e));
    svgEl.addEventListener("pointermove", (e) => this.move(e));
    svgEl.addEventListener("pointerup", (e) => this.up(e));
    svgEl.addEventListener("pointercancel", () => { this.gesture = null; this.render(); });
    window.addEventListener("resize", () => this.render());
  }

  get natural() { return { w: this.img.naturalWidth || 1, h: this.img.naturalHeight || 1 }; }
  get selected() { return this.boxes.find((b) => b.id === this.selectedId) || null; }

  setBoxes(boxes) {
    this.boxes = boxes.map((b) => ({ ...b }));
    if (!this.selected) this.selectedId = null;
    this.render();
  }

  upsert(box) {
    const i = this.boxes.findIndex((b) => b.id === box.id);
    if (i >= 0) this.boxes[i] = { ...box }; else this.boxes.push({ ...box });
    this.render();
  }

  remove(id) {
    this.boxes = this.boxes.filter((b) => b.id !== id);
    if (this.selectedId === id) this.select(null);
    this.render();
  }

  select(id) {
    this.selectedId = id;
    this.render();
    if (this.cb.onSelect) this.cb.onSelect(this.selected);
  }

  /** The pointer's position, normalized to the displayed image. */
  point(event) {
    const r = this.svg.getBoundingClientRect();
    return { x: clamp((event.clientX - r.left) / r.width), y: clamp((event.clientY - r.top) / r.height),
      pxPerX: r.width, pxPerY: r.height };
  }

  down(event) {
    if (event.button !== 0) return;
    const p = this.point(event);
    const target = event.target;
    this.svg.setPointerCapture(event.pointerId);
    event.preventDefault();
    if (target.classList.contains("handle")) {
      const b = this.selected;
      const corner = target.dataset.corner;  // the opposite corner stays put
      this.gesture = { kind: "resize", id: b.id, before: { ...b },
        fixed: { x: corner.includes("w") ? b.right : b.left, y: corner.includes("n") ? b.bottom : b.top }, start: p };
    } else if (target.classList.contains("box")) {
      const id = target.dataset.annotation;
      if (this.selectedId !== id) this.select(id);
      this.gesture = { kind: "move", id, before: { ...this.selected }, start: p };
    } else {
      if (this.selectedId !== null) this.select(null);
      this.gesture = { kind: "draw", start: p, end: p };
    }
  }

  move(event) {
    const g = this.gesture;
    if (!g) return;
    const p = this.point(event);
    g.end = p;
    if (g.kind === "draw") { this.render(); return; }
    const b = this.boxes.find((x) => x.id === g.id);
    if (!b) return;
    if (g.kind === "move") {
      const w = g.before.right - g.before.left;
      const h = g.before.bottom - g.before.top;
      const left = Math.min(1 - w, Math.max(0, g.before.left + p.x - g.start.x));
      const top = Math.min(1 - h, Math.max(0, g.before.top + p.y - g.start.y));
      Object.assign(b, { left, top, right: left + w, bottom: top + h });
    } else {
      Object.assign(b, { left: Math.min(g.fixed.x, p.x), right: Math.max(g.fixed.x, p.x),
        top: Math.min(g.fixed.y, p.y), bottom: Math.max(g.fixed.y, p.y) });
    }
    this.render();
  }

  up(event) {
    const g = this.gesture;
    this.gesture = null;
    if (!g) return;
    if (this.svg.hasPointerCapture(event.pointerId)) this.svg.releasePointerCapture(event.pointerId);
    const p = g.end || this.point(event);
    if (g.kind === "draw") {
      this.render();
      const wPx = Math.abs(p.x - g.start.x) * p.pxPerX;
      const hPx = Math.abs(p.y - g.start.y) * p.pxPerY;
      if (wPx < MIN_PX || hPx < MIN_PX) return;
      this.cb.onCreate({ top: Math.min(p.y, g.start.y), left: Math.min(p.x, g.start.x),
        bottom: Math.max(p.y, g.start.y), right: Math.max(p.x, g.start.x) });
      return;
    }
    const b = this.boxes.find((x) => x.id === g.id);
    if (!b) return;
    const moved = ["top", "left", "bottom", "right"].some((k) => Math.abs(b[k] - g.before[k]) * (k === "top" || k === "bottom" ? p.pxPerY : p.pxPerX) >= 0.5);
    if (!moved) { Object.assign(b, g.before); this.render(); return; }
    const wPx = (b.right - b.left) * p.pxPerX;
    const hPx = (b.bottom - b.top) * p.pxPerY;
    if (wPx < MIN_PX || hPx < MIN_PX) { Object.assign(b, g.before); this.render(); return; }  // resized to nothing
    this.cb.onChange({ ...b }, g.before);
  }

  /** Redraw every box (and the draft of a box being drawn) in natural pixels. */
  render() {
    const { w, h } = this.natural;
    const shown = this.svg.getBoundingClientRect();
    const unit = shown.width ? w / shown.width : 1;  // natural pixels per displayed pixel
    this.svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
    this.svg.setAttribute("preserveAspectRatio", "none");
    const nodes = [];
    const sorted = [...this.boxes].sort((a, b) => (a.id === this.selectedId) - (b.id === this.selectedId));
    for (const b of sorted) {
      const x = b.left * w, y = b.top * h, bw = (b.right - b.left) * w, bh = (b.bottom - b.top) * h;
      const sel = b.id === this.selectedId;
      const rect = svg("rect", { class: sel ? "box selected" : "box", x, y, width: bw, height: bh,
        "data-annotation": b.id, "data-concept": b.concept });
      const color = this.cb.colorOf ? this.cb.colorOf(b.concept) : null;
      if (color) rect.style.setProperty("--box-color", color);
      const font = 12 * unit;
      const tag = svg("g", { class: "box-tag", "pointer-events": "none" });
      const text = svg("text", { x: x + 4 * unit, y: Math.max(y - 4 * unit, font), "font-size": font }, b.concept);
      tag.append(text);
      if (color) tag.style.setProperty("--box-color", color);
      nodes.push(rect, tag);
      if (sel) {
        for (const [corner, cx, cy] of [["nw", x, y], ["ne", x + bw, y], ["sw", x, y + bh], ["se", x + bw, y + bh]]) {
          nodes.push(svg("circle", { class: "handle", cx, cy, r: 5.5 * unit, "data-corner": corner }));
        }
      }
    }
    const g = this.gesture;
    if (g && g.kind === "draw" && g.end) {
      const x0 = Math.min(g.start.x, g.end.x) * w, y0 = Math.min(g.start.y, g.end.y) * h;
      nodes.push(svg("rect", { class: "box draft", x: x0, y: y0, width: Math.abs(g.end.x - g.start.x) * w,
        height: Math.abs(g.end.y - g.start.y) * h }));
    }
    this.svg.replaceChildren(...nodes);
  }
}

/** A box of the API (a region of an input) in the editor's shape. */
export function fromRegion(region) {
  const bb = (region.region_info && region.region_info.bounding_box) || {};
  const concept = (region.data && region.data.concepts && region.data.concepts[0]) || {};
  return { id: String(region.id), concept: concept.id || "", top: bb.top_row || 0, left: bb.left_col || 0,
    bottom: bb.bottom_row || 0, right: bb.right_col || 0 };
}

/** The API's region for a box of the editor with its concept. */
export function toRegion(box, concept) {
  return { region_info: { bounding_box: { top_row: box.top, left_col: box.left, bottom_row: box.bottom, right_col: box.right } },
    data: { concepts: [{ id: concept, value: 1 }] } };
}
