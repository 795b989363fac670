// Line charts in plain SVG for the live training panel: axes with nice ticks, grid lines, a legend and a
// hover readout. lineChart(svgEl, {series: [{name, points: [[x, y], …], dots?}], xLabel, yLabel, yFormat,
// xFormat}) redraws the whole chart (cheap at a few hundred points) and bumps svgEl's data-updates, so a
// test (or a person) can tell a redraw happened. The chart is drawn at the element's pixel size and redrawn
// when that size changes.
import { svg } from "./ui.js";

const COLORS = ["#2457c5", "#e0702b", "#1f8a4c", "#9b4dca", "#c53030", "#0e8a9a"];
const PAD = { top: 30, right: 18, bottom: 38, left: 58 };
const observed = new WeakMap();  // svgEl -> the last options (for redraws on resize)

/** About `count` round tick values covering [lo, hi] (1, 2, 2.5, 5 × 10^k steps). */
export function niceTicks(lo, hi, count = 5) {
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) return [];
  if (lo === hi) { const d = Math.abs(lo) * 0.1 || 1; lo -= d; hi += d; }
  const raw = (hi - lo) / Math.max(1, count);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || 10 * mag;
  const ticks = [];
  for (let v = Math.floor(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(+v.toPrecision(12));
  if (ticks[0] > lo) ticks.unshift(+(ticks[0] - step).toPrecision(12));
  if (ticks[ticks.length - 1] < hi) ticks.push(+(ticks[ticks.length - 1] + step).toPrecision(12));
  return ticks;
}

/** A short number: 0.00123 -> "1.23e-3", 12345 -> "12.3k", 0.25 -> "0.25". */
export function shortNumber(v) {
  if (!Number.isFinite(v)) return "–";
  const a = Math.abs(v);
  if (a === 0) return "0";
  if (a >= 1e4) return `${+(v / 1e3).toPrecision(3)}k`;
  if (a < 1e-3) return v.toExponential(1).replace("e-", "e-");
  return String(+v.toPrecision(3));
}

function size(svgEl) {
  const box = svgEl.getBoundingClientRect();
  return { w: Math.max(240, Math.round(box.width) || 600), h: Math.max(140, Math.round(box.height) || 220) };
}

function extent(values, padFraction) {
  let lo = Math.min(...values), hi = Math.max(...values);
  if (lo === hi) { const d = Math.abs(lo) * 0.1 || 1; lo -= d; hi += d; }
  const pad = (hi - lo) * padFraction;
  return [lo - pad, hi + pad];
}

function legend(series, w) {
  const g = svg("g", { class: "legend" });
  let x = w - PAD.right;
  for (let i = series.length - 1; i >= 0; i -= 1) {
    const label = series[i].name || `series ${i + 1}`;
    const width = 22 + label.length * 6.4;
    x -= width;
    g.append(svg("line", { x1: x, x2: x + 14, y1: 13, y2: 13, stroke: series[i].color, "stroke-width": 3,
      "stroke-linecap": "round" }), svg("text", { x: x + 18, y: 17, class: "legend-text" }, label));
    x -= 10;
  }
  return g;
}

function hover(root, series, sx, sy, opts, box) {
  const { x0, x1, y0, y1 } = box;
  const line = svg("line", { class: "hover-line", y1: y0, y2: y1, visibility: "hidden" });
  const dots = series.map((s) => svg("circle", { r: 4, fill: s.color, class: "hover-dot", visibility: "hidden" }));
  const tipBox = svg("rect", { class: "tip-box", rx: 5, visibility: "hidden" });
  const tipText = svg("text", { class: "tip-text", visibility: "hidden" });
  const overlay = svg("rect", { x: x0, y: y1, width: x1 - x0, height: y0 - y1, class: "hover-area" });
  const hide = () => [line, tipBox, tipText, ...dots].forEach((n) => n.setAttribute("visibility", "hidden"));
  overlay.addEventListener("mouseleave", hide);
  overlay.addEventListener("mousemove", (event) => {
    const ctm = root.getScreenCTM();
    if (!ctm) return;
    const px = (event.clientX - ctm.e) / ctm.a;
    const lines = [];
    let nearestX = null;
    series.forEach((s, i) => {
      if (!s.points.length) { dots[i].setAttribute("visibility", "hidden"); return; }
      let best = s.points[0];
      for (const p of s.points) if (Math.abs(sx(p[0]) - px) < Math.abs(sx(best[0]) - px)) best = p;
      if (nearestX === null || Math.abs(sx(best[0]) - px) < Math.abs(sx(nearestX) - px)) nearestX = best[0];
      dots[i].setAttribute("cx", sx(best[0]));
      dots[i].setAttribute("cy", sy(best[1]));
      dots[i].setAttribute("visibility", "visible");
      lines.push(`${s.name}: ${opts.yFormat(best[1])}`);
    });
    if (nearestX === null) return;
    line.setAttribute("x1", sx(nearestX)); line.setAttribute("x2", sx(nearestX));
    line.setAttribute("visibility", "visible");
    tipText.replaceChildren(...[`${opts.xLabel || "x"} ${opts.xFormat(nearestX)}`, ...lines].map((t, i) =>
      svg("tspan", { x: 0, dy: i ? 15 : 0, class: i ? "" : "tip-head" }, t)));
    tipText.setAttribute("visibility", "visible");
    const bb = tipText.getBBox();
    let tx = sx(nearestX) + 12;
    if (tx + bb.width + 16 > x1) tx = sx(nearestX) - bb.width - 24;
    const ty = y1 + 16;
    tipText.setAttribute("transform", `translate(${tx + 8},${ty + 4})`);
    tipBox.setAttribute("x", tx); tipBox.setAttribute("y", ty - 10);
    tipBox.setAttribute("width", bb.width + 16); tipBox.setAttribute("height", bb.height + 10);
    tipBox.setAttribute("visibility", "visible");
  });
  return [line, ...dots, tipBox, tipText, overlay];
}

/** Draw (or redraw) a line chart into svgEl; see the module's comment for the options. */
export function lineChart(svgEl, options) {
  const opts = { xFormat: shortNumber, yFormat: shortNumber, ...options };
  const series = (opts.series || []).map((s, i) => ({
    ...s, color: s.color || COLORS[i % COLORS.length],
    points: (s.points || []).filter((p) => Number.isFinite(p[0]) && Number.isFinite(p[1])),
  }));
  const { w, h } = size(svgEl);
  svgEl.setAttribute("viewBox", `0 0 ${w} ${h}`);
  svgEl.classList.add("chart");
  const box = { x0: PAD.left, x1: w - PAD.right, y0: h - PAD.bottom, y1: PAD.top };
  const parts = [];
  const all = series.flatMap((s) => s.points);
  if (opts.title) parts.push(svg("text", { x: PAD.left, y: 17, class: "chart-title" }, opts.title));
  if (!all.length) {
    parts.push(svg("rect", { x: box.x0, y: box.y1, width: box.x1 - box.x0, height: box.y0 - box.y1, class: "plot-bg" }),
      svg("text", { x: (box.x0 + box.x1) / 2, y: (box.y0 + box.y1) / 2, class: "chart-empty", "text-anchor": "middle" },
        opts.empty || "no data yet"));
  } else {
    const xs = niceTicks(...extent(all.map((p) => p[0]), 0), Math.max(2, Math.floor((w - 80) / 90)));
    let [ylo, yhi] = extent(all.map((p) => p[1]), 0.06);
    if (ylo < 0 && all.every((p) => p[1] >= 0)) ylo = 0;  // a loss, a rate or an accuracy never goes below 0
    if (yhi > 1 && all.every((p) => p[1] <= 1) && all.some((p) => p[1] > 0.5)) yhi = 1;  // nor an accuracy above 1
    const ys = niceTicks(ylo, yhi, Math.max(2, Math.floor((h - 70) / 40)));
    const [xmin, xmax] = [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))];
    const xa = xmin === xmax ? xmin - 1 : xmin, xb = xmin === xmax ? xmax + 1 : xmax;
    const [ya, yb] = [ys[0], ys[ys.length - 1]];
    const sx = (x) => box.x0 + ((x - xa) / (xb - xa)) * (box.x1 - box.x0);
    const sy = (y) => box.y0 - ((y - ya) / (yb - ya)) * (box.y0 - box.y1);
    parts.push(svg("rect", { x: box.x0, y: box.y1, width: box.x1 - box.x0, height: box.y0 - box.y1, class: "plot-bg" }));
    for (const y of ys) {
      parts.push(svg("line", { x1: box.x0, x2: box.x1, y1: sy(y), y2: sy(y), class: "grid" }),
        svg("text", { x: box.x0 - 8, y: sy(y) + 4, "text-anchor": "end", class: "tick" }, opts.yFormat(y)));
    }
    for (const x of xs.filter((v) => v >= xa - 1e-9 && v <= xb + 1e-9 && opts.xFormat(v) !== "")) {
      parts.push(svg("line", { x1: sx(x), x2: sx(x), y1: box.y0, y2: box.y0 + 4, class: "axis" }),
        svg("text", { x: sx(x), y: box.y0 + 17, "text-anchor": "middle", class: "tick" }, opts.xFormat(x)));
    }
    parts.push(svg("line", { x1: box.x0, x2: box.x1, y1: box.y0, y2: box.y0, class: "axis" }));
    for (const s of series) {
      if (!s.points.length) continue;
      const d = s.points.map((p, i) => `${i ? "L" : "M"}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join("");
      parts.push(svg("path", { d, class: "series", stroke: s.color, "data-series": s.name || "" }));
      if (s.dots || s.points.length <= 24) {
        for (const p of s.points) parts.push(svg("circle", { cx: sx(p[0]), cy: sy(p[1]), r: s.points.length <= 12 ? 3.5 : 2.2, fill: s.color, class: "point" }));
      }
    }
    parts.push(legend(series, w), ...hover(svgEl, series, sx, sy, opts, box));
  }
  if (opts.xLabel) parts.push(svg("text", { x: (box.x0 + box.x1) / 2, y: h - 6, "text-anchor": "middle", class: "axis-label" }, opts.xLabel));
  if (opts.yLabel) parts.push(svg("text", { x: 14, y: (box.y0 + box.y1) / 2, "text-anchor": "middle", class: "axis-label",
    transform: `rotate(-90 14 ${(box.y0 + box.y1) / 2})` }, opts.yLabel));
  svgEl.replaceChildren(...parts);
  svgEl.dataset.updates = String(Number(svgEl.dataset.updates || 0) + 1);
  watchSize(svgEl, options);
}

function watchSize(svgEl, options) {
  const known = observed.get(svgEl);
  observed.set(svgEl, { options, w: size(svgEl).w });
  if (known || typeof ResizeObserver === "undefined") return;
  new ResizeObserver(() => {
    const last = observed.get(svgEl);
    if (last && Math.abs(size(svgEl).w - last.w) > 4) lineChart(svgEl, last.options);
  }).observe(svgEl);
}
