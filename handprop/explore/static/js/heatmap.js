// Heatmaps and line charts, drawn in SVG.
"use strict";

(function (HP) {
  // One floating tooltip for every heatmap: the value under the pointer.
  let tip = null;
  function showTip(event, text) {
    if (!tip) {
      tip = HP.el("div", { class: "tip", role: "status" });
      document.body.append(tip);
    }
    tip.textContent = text;
    tip.style.left = event.pageX + 12 + "px";
    tip.style.top = event.pageY + 12 + "px";
    tip.hidden = false;
  }
  function hideTip() {
    if (tip) tip.hidden = true;
  }

  // A grid of cells (rows x cols), one colour each; update() recolours in place.
  // options: cell (px), label (accessible name), ink (digits: grey scale).
  class Heatmap {
    constructor(options) {
      this.cell = options.cell || 10;
      this.ink = !!options.ink;
      this.label = options.label || "heatmap";
      this.node = HP.svg("svg", { class: "heatmap", role: "img", "aria-label": this.label });
      this.rows = this.cols = 0;
      this.rects = [];
      this.values = null;
      this.node.addEventListener("mousemove", (e) => this._tip(e));
      this.node.addEventListener("mouseleave", hideTip);
    }

    _shape(rows, cols) {
      if (rows === this.rows && cols === this.cols) return;
      HP.clear(this.node);
      this.rows = rows;
      this.cols = cols;
      this.node.setAttribute("viewBox", "0 0 " + cols + " " + rows);
      this.node.setAttribute("width", cols * this.cell);
      this.node.setAttribute("height", rows * this.cell);
      this.node.setAttribute("preserveAspectRatio", "none");
      this.rects = [];
      for (let r = 0; r < rows; r++) {
        for (let c = 0; c < cols; c++) {
          const rect = HP.svg("rect", { x: c, y: r, width: 1.02, height: 1.02 });
          this.rects.push(rect);
          this.node.append(rect);
        }
      }
      this.empty = HP.svg("text", {
        x: cols / 2, y: rows / 2, class: "empty", "text-anchor": "middle",
        "dominant-baseline": "central", "font-size": Math.max(0.8, Math.min(rows, cols) / 3),
      });
      this.empty.textContent = "\u2014";
      this.node.append(this.empty);
    }

    // plane: {rows, cols, data} or null (nothing flows here); scale: the colour range.
    update(plane, scale, shape) {
      if (!plane) {
        const [rows, cols] = shape || [this.rows || 1, this.cols || 1];
        this._shape(rows, cols);
        for (const rect of this.rects) rect.setAttribute("fill", "#e6e6e6");
        this.empty.setAttribute("visibility", "visible");
        this.values = null;
        this.node.classList.add("none");
        return;
      }
      this._shape(plane.rows, plane.cols);
      this.empty.setAttribute("visibility", "hidden");
      this.node.classList.remove("none");
      this.values = plane.data;
      const data = plane.data;
      for (let i = 0; i < data.length; i++) {
        this.rects[i].setAttribute("fill", this.ink ? HP.ink(data[i], scale) : HP.diverging(data[i], scale));
      }
    }

    _tip(event) {
      if (!this.values) return showTip(event, this.label + ": nothing flows here");
      const box = this.node.getBoundingClientRect();
      const c = Math.floor(((event.clientX - box.left) / box.width) * this.cols);
      const r = Math.floor(((event.clientY - box.top) / box.height) * this.rows);
      const v = this.values[r * this.cols + c];
      if (v === undefined) return hideTip();
      showTip(event, this.label + " [" + r + ", " + c + "] = " + HP.fmt(v, 5));
    }
  }
  HP.Heatmap = Heatmap;

  // A small legend: the diverging scale from -top to +top.
  HP.legend = function (top, label) {
    const width = 120;
    const svg = HP.svg("svg", { class: "legend", width: width + 80, height: 22, role: "img",
      "aria-label": (label || "colour scale") + ": -" + HP.fmt(top) + " to +" + HP.fmt(top) });
    for (let i = 0; i < 24; i++) {
      const v = -1 + (2 * (i + 0.5)) / 24;
      svg.append(HP.svg("rect", { x: 40 + (i * width) / 24, y: 4, width: width / 24 + 0.5,
        height: 10, fill: HP.diverging(v, 1) }));
    }
    svg.append(HP.svg("text", { x: 36, y: 13, "text-anchor": "end", text: "-" + HP.fmt(top) }));
    svg.append(HP.svg("text", { x: 44 + width, y: 13, text: "+" + HP.fmt(top) }));
    return svg;
  };

  // -- line charts ------------------------------------------------------------------
  // A chart of series [{name, color, dash, xs, ys}] (null ys break the line).
  class LineChart {
    constructor(options) {
      this.width = options.width || 560;
      this.height = options.height || 215;
      this.title = options.title || "";
      this.yLabel = options.yLabel || "";
      this.fixedY = options.y || null; // [low, high] or null: from the data
      this.refLines = options.refLines || [];
      this.m = { left: 54, right: 12, top: 40, bottom: 30 };
      this.node = HP.svg("svg", { class: "chart", viewBox: "0 0 " + this.width + " " + this.height,
        role: "img", "aria-label": this.title });
    }

    draw(series, yRange) {
      const svg = HP.clear(this.node);
      const { left, right, top, bottom } = this.m;
      const w = this.width - left - right;
      const h = this.height - top - bottom;
      let xMax = 1;
      let lo = Infinity;
      let hi = -Infinity;
      for (const s of series) {
        for (let i = 0; i < s.xs.length; i++) {
          xMax = Math.max(xMax, s.xs[i]);
          const y = s.ys[i];
          if (y === null || y === undefined) continue;
          lo = Math.min(lo, y);
          hi = Math.max(hi, y);
        }
      }
      [lo, hi] = this.fixedY || yRange || (isFinite(lo) ? [Math.min(0, lo), hi > lo ? hi : lo + 1] : [0, 1]);
      if (!(hi > lo)) hi = lo + 1;
      const X = (x) => left + (x / xMax) * w;
      const Y = (y) => top + h - ((Math.max(lo, Math.min(hi, y)) - lo) / (hi - lo)) * h;
      svg.append(HP.svg("text", { x: left, y: 15, class: "chart-title", text: this.title }));
      for (const t of ticks(lo, hi, 4)) {
        svg.append(HP.svg("line", { x1: left, x2: left + w, y1: Y(t), y2: Y(t), class: "grid" }));
        svg.append(HP.svg("text", { x: left - 6, y: Y(t) + 4, "text-anchor": "end", class: "tick",
          text: HP.fmt(t, 3) }));
      }
      for (const t of ticks(0, xMax, 5)) {
        svg.append(HP.svg("text", { x: X(t), y: top + h + 16, "text-anchor": "middle", class: "tick",
          text: HP.fmt(t, 4) }));
      }
      svg.append(HP.svg("text", { x: left + w, y: this.height - 2, "text-anchor": "end",
        class: "tick", text: "step" }));
      svg.append(HP.svg("text", { x: 12, y: top + h / 2, class: "tick", "text-anchor": "middle",
        transform: "rotate(-90 12 " + (top + h / 2) + ")", text: this.yLabel }));
      for (const ref of this.refLines) {
        if (ref < lo || ref > hi) continue;
        svg.append(HP.svg("line", { x1: left, x2: left + w, y1: Y(ref), y2: Y(ref), class: "ref" }));
      }
      svg.append(HP.svg("rect", { x: left, y: top, width: w, height: h, class: "frame" }));
      for (const s of series) {
        for (const part of segments(s.xs, s.ys)) {
          const points = part.map(([x, y]) => X(x).toFixed(1) + "," + Y(y).toFixed(1)).join(" ");
          svg.append(HP.svg("polyline", { points: points, fill: "none", stroke: s.color,
            "stroke-width": s.width || 1.8, "stroke-dasharray": s.dash || null }));
        }
      }
      let lx = left;
      for (const s of series) {
        if (!s.name) continue;
        // the legend sits between the title and the plot, never over the data
        svg.append(HP.svg("line", { x1: lx, x2: lx + 18, y1: top - 10, y2: top - 10, stroke: s.color,
          "stroke-width": 2.2, "stroke-dasharray": s.dash || null }));
        const label = HP.svg("text", { x: lx + 22, y: top - 6, class: "tick", text: s.name });
        svg.append(label);
        lx += 30 + 7 * s.name.length;
      }
      return [lo, hi];
    }
  }
  HP.LineChart = LineChart;

  function segments(xs, ys) {
    const parts = [];
    let part = [];
    for (let i = 0; i < xs.length; i++) {
      if (ys[i] === null || ys[i] === undefined) {
        if (part.length) parts.push(part);
        part = [];
      } else part.push([xs[i], ys[i]]);
    }
    if (part.length) parts.push(part);
    return parts.map((p) => (p.length === 1 ? [p[0], p[0]] : p));
  }

  // About `count` round tick values between lo and hi.
  function ticks(lo, hi, count) {
    const span = hi - lo;
    if (!(span > 0)) return [lo];
    const raw = span / count;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 5, 10].map((f) => f * mag).find((s) => span / s <= count) || 10 * mag;
    const out = [];
    for (let t = Math.ceil(lo / step) * step; t <= hi + 1e-9 * span; t += step) out.push(Number(t.toPrecision(12)));
    return out;
  }
  HP.ticks = ticks;
})(window.HP);
