// The evaluation page's plots and tables, in plain SVG/DOM: precision-recall curves (one per concept, fixed
// [0, 1] axes, a legend that highlights its curve on hover), a table cell with a value and a small bar, the
// confusion matrix shaded by row share, and boxes drawn over a thumbnail (true green, predicted red).
import { el, fmt, svg } from "./ui.js";

export const PALETTE = ["#2457c5", "#e0702b", "#1f8a4c", "#9b4dca", "#c53030", "#0e8a9a", "#b7791f",
  "#d53f8c", "#4a5568", "#7cb342", "#8d6e63", "#1e3a8a"];
const PAD = { top: 14, right: 150, bottom: 40, left: 48 };

/** The interpolated curve (precision at recall r = the best precision at any recall >= r, as average
 *  precision counts it): the raw threshold sweep's saw-teeth become steps, read left to right. */
export function envelope(points) {
  const pts = (points || []).filter((p) => Number.isFinite(p[0]) && Number.isFinite(p[1])).slice().sort((a, b) => a[0] - b[0]);
  let best = 0;
  const out = [];
  for (let i = pts.length - 1; i >= 0; i--) { best = Math.max(best, pts[i][1]); out.push([pts[i][0], best]); }
  out.reverse();
  const steps = [];
  for (const [r, p] of out) {  // a step: horizontal to the next recall, then down
    if (steps.length && steps[steps.length - 1][1] !== p) steps.push([r, steps[steps.length - 1][1]]);
    steps.push([r, p]);
  }
  if (steps.length && steps[0][0] > 0) steps.unshift([0, steps[0][1]]);
  return steps;
}

/** Draw precision-recall curves: curves = {concept: [[recall, precision], …]} (interpolated, see envelope);
 *  ap = {concept: AP} adds it to the legend. An empty map draws a note. */
export function prCurves(svgEl, curves, ap = {}) {
  const rect = svgEl.getBoundingClientRect();
  const w = Math.max(320, Math.round(rect.width) || 560);
  const h = Math.max(220, Math.round(rect.height) || 300);
  svgEl.setAttribute("viewBox", `0 0 ${w} ${h}`);
  const names = Object.keys(curves || {});
  const iw = w - PAD.left - PAD.right;
  const ih = h - PAD.top - PAD.bottom;
  const x = (r) => PAD.left + r * iw;
  const y = (p) => PAD.top + (1 - p) * ih;
  const parts = [svg("rect", { x: PAD.left, y: PAD.top, width: iw, height: ih, class: "plot-bg" })];
  for (let t = 0; t <= 1.0001; t += 0.2) {
    const v = +t.toFixed(1);
    parts.push(svg("line", { x1: x(v), x2: x(v), y1: PAD.top, y2: PAD.top + ih, class: "grid" }),
      svg("line", { x1: PAD.left, x2: PAD.left + iw, y1: y(v), y2: y(v), class: "grid" }),
      svg("text", { x: x(v), y: PAD.top + ih + 15, "text-anchor": "middle", class: "tick" }, String(v)),
      svg("text", { x: PAD.left - 6, y: y(v) + 4, "text-anchor": "end", class: "tick" }, String(v)));
  }
  parts.push(svg("line", { x1: PAD.left, x2: PAD.left + iw, y1: PAD.top + ih, y2: PAD.top + ih, class: "axis" }),
    svg("line", { x1: PAD.left, x2: PAD.left, y1: PAD.top, y2: PAD.top + ih, class: "axis" }),
    svg("text", { x: PAD.left + iw / 2, y: h - 6, "text-anchor": "middle", class: "axis-label" }, "recall"),
    svg("text", { x: 12, y: PAD.top + ih / 2, "text-anchor": "middle", class: "axis-label",
      transform: `rotate(-90 12 ${PAD.top + ih / 2})` }, "precision"));
  if (!names.length) {
    parts.push(svg("text", { x: PAD.left + iw / 2, y: PAD.top + ih / 2, "text-anchor": "middle", class: "chart-empty" },
      "no curves for this version"));
    svgEl.replaceChildren(...parts);
    return;
  }
  const lines = svg("g", { class: "pr-lines" });
  const legend = svg("g", { class: "pr-legend" });
  const rowH = Math.min(18, Math.max(12, (ih - 4) / names.length));
  names.forEach((name, i) => {
    const color = PALETTE[i % PALETTE.length];
    const pts = envelope(curves[name]);
    const d = pts.map(([r, p], k) => `${k ? "L" : "M"}${x(r).toFixed(1)},${y(p).toFixed(1)}`).join("");
    const path = svg("path", { d: d || "M0,0", class: "series pr-line", stroke: color, "data-concept": name },
      svg("title", {}, name));
    lines.append(path);
    const ly = PAD.top + 6 + i * rowH;
    const item = svg("g", { class: "legend-item", "data-concept": name },
      svg("rect", { x: PAD.left + iw + 14, y: ly - 4, width: 14, height: 4, rx: 2, fill: color }),
      svg("text", { x: PAD.left + iw + 34, y: ly + 1, class: "legend-text" }, name.length > 13 ? `${name.slice(0, 12)}…` : name,
        typeof ap[name] === "number" ? svg("tspan", { class: "legend-ap", dx: 4 }, fmt(ap[name], 2)) : null),
      svg("title", {}, typeof ap[name] === "number" ? `${name}: AP ${fmt(ap[name], 3)}` : name));
    const focus = (on) => { svgEl.classList.toggle("focused", on); path.classList.toggle("hot", on); item.classList.toggle("hot", on); };
    for (const node of [item, path]) {
      node.addEventListener("mouseenter", () => focus(true));
      node.addEventListener("mouseleave", () => focus(false));
    }
    legend.append(item);
  });
  svgEl.replaceChildren(...parts, lines, legend);
}

/** A table cell with a value in [0, 1] as a number and a small bar (none for null). */
export function barCell(value, digits = 3) {
  const ok = typeof value === "number" && Number.isFinite(value);
  const bar = el("span", { class: "minibar" }, el("span", { class: "minibar-fill" }));
  if (ok) bar.firstChild.style.width = `${Math.max(0, Math.min(1, value)) * 100}%`;
  return el("td", { class: "num bar-cell" }, el("span", {}, ok ? fmt(value, digits) : "–"), ok ? bar : null);
}

/** Fill table.matrix with a confusion matrix: rows true, columns predicted, cells shaded by row share. */
export function confusionTable(table, { concepts, counts }) {
  const short = (c) => (c.length > 10 ? `${c.slice(0, 9)}…` : c);
  const head = el("tr", {}, el("th", { class: "corner" }, "true \\ pred"),
    ...concepts.map((c) => el("th", { class: "col-head", title: c }, el("span", {}, short(c)))));
  const rows = counts.map((row, i) => {
    const total = row.reduce((a, b) => a + b, 0);
    return el("tr", { dataset: { concept: concepts[i] } },
      el("th", { class: "row-head", title: concepts[i] }, concepts[i]),
      ...row.map((n, j) => {
        const share = total ? n / total : 0;
        const td = el("td", { title: `true ${concepts[i]} · predicted ${concepts[j]}: ${n} (${(100 * share).toFixed(0)}%)`,
          class: `${i === j ? "diag" : "off"}${n ? "" : " zero"}` }, n ? String(n) : "·");
        const hue = i === j ? "36, 87, 197" : "197, 48, 48";
        if (n) td.style.backgroundColor = `rgba(${hue}, ${(0.08 + 0.8 * share).toFixed(3)})`;
        if (share > 0.55) td.classList.add("dark");
        return td;
      }));
  });
  table.replaceChildren(el("thead", {}, head), el("tbody", {}, ...rows));
}

/** Boxes over a thumbnail: an SVG in normalized coordinates; true boxes green (missed ones dashed and
 *  marked), predicted red (false positives thicker). */
export function boxOverlay(boxes) {
  const layer = svg("svg", { class: "overlay", viewBox: "0 0 1 1", preserveAspectRatio: "none" });
  const rect = (b, cls, label) => svg("rect", { x: b.left_col, y: b.top_row, width: Math.max(0, b.right_col - b.left_col),
    height: Math.max(0, b.bottom_row - b.top_row), class: cls }, svg("title", {}, label));
  const missed = new Set(boxes.missed || []);
  const fps = new Set(boxes.false_positives || []);
  (boxes.true || []).forEach((b, i) => layer.append(rect(b, `truth${missed.has(i) ? " missed" : ""}`,
    `true ${b.concept}${missed.has(i) ? " (missed)" : ""}`)));
  (boxes.predicted || []).forEach((b, i) => layer.append(rect(b, `pred${fps.has(i) ? " fp" : ""}`,
    `predicted ${b.concept} ${fmt(b.score, 2)}${fps.has(i) ? " (false positive)" : ""}`)));
  return layer;
}
