// The article's network, drawn as the article draws it: the input, layer 1's two
// channels (kernel, activation map, pool), layer 2's four channels (a, b read layer-1 map
// a; c, d read b), the flattened features, the dense layers and the output. Each conv
// channel's backward line (blue / green / red) is drawn under it.
"use strict";

(function (HP) {
  const W = 1130;
  const H = 470;
  const TOP = 60;
  const BODY = 330; // height the channels share

  class NetworkDiagram {
    constructor() {
      this.node = HP.svg("svg", { class: "network", viewBox: "0 0 " + W + " " + H, role: "img",
        "aria-label": "the article's network with this image's activations" });
      this.key = null;
    }

    // The layout depends on the network's structure and the rule's lines only.
    _build(view, lines, asRun) {
      const svg = HP.clear(this.node);
      this.maps = {};
      const f = view.forward;
      const inputY = TOP + BODY / 2 - 48;
      this.maps.input = this._map(svg, 20, inputY, 12, "input image", true);
      svg.append(label(68, TOP - 34, "input"), label(68, TOP - 18, "8\u00d78", "sub"));
      let x = 150;
      let previous = [{ x: 116, y: inputY + 48 }];
      for (const block of f.blocks.filter((b) => b.kind === "conv")) {
        [previous, x] = this._convBlock(svg, block, x, previous, lines && lines[block.name], asRun);
      }
      this._dense(svg, f, x, previous);
      this._legend(svg, lines);
    }

    _map(svg, x, y, cell, name, ink) {
      const map = new HP.Heatmap({ cell: cell, label: name, ink: ink });
      map.node.setAttribute("x", x);
      map.node.setAttribute("y", y);
      svg.append(map.node);
      return map;
    }

    // Columns: kernels, activation maps, pooled maps; returns the pooled maps' right
    // edges (what the next layer reads) and the x where the next layer starts.
    _convBlock(svg, block, x, sources, lines, asRun) {
      const count = block.channels.length;
      const size = block.pre.shape[1];
      const cell = Math.max(8, Math.min(14, Math.floor(80 / size)));
      const pooled = block.pool ? block.pool.shape[1] : size;
      const pcell = Math.max(8, Math.min(14, Math.floor(44 / pooled)));
      const kx = x;
      const mx = kx + 24 + 36;
      const px = mx + size * cell + 48;
      const end = block.pool ? px + pooled * pcell : mx + size * cell;
      const title = "layer " + block.name.replace(/\D/g, "") + " (" + block.name + ")";
      svg.append(label((kx + end) / 2, TOP - 34, title));
      svg.append(label(kx + 12, TOP - 18, "kernel", "sub"), label(mx + (size * cell) / 2, TOP - 18,
        "activation", "sub"));
      if (block.pool) svg.append(label(px + (pooled * pcell) / 2, TOP - 18, "max-pool", "sub"));
      const out = [];
      for (let c = 0; c < count; c++) {
        const cy = TOP + ((c + 0.5) * BODY) / count;
        const my = cy - (size * cell) / 2;
        const source = sources[block.inputs[c][0]] || sources[0];
        const ky = cy - 12;
        svg.append(HP.svg("line", { x1: source.x, y1: source.y, x2: kx, y2: cy, class: "edge" }));
        svg.append(HP.svg("line", { x1: kx + 24, y1: cy, x2: mx, y2: cy, class: "edge",
          "marker-end": "url(#arrow)" }));
        const kname = "W" + block.name.replace(/\D/g, "") + block.channels[c];
        this.maps[block.name + ".k" + c] = this._map(svg, kx, ky, 8, block.used_from
          ? "kernel used (" + block.used_from + ", as run)" : kname, false);
        this.maps[block.name + ".act" + c] = this._map(svg, mx, my, cell,
          block.name + " " + block.channels[c] + " activation", false);
        const channelName = block.name.replace(/\D/g, "") + block.channels[c];
        svg.append(HP.svg("text", { x: mx, y: my - 5, class: "chan", text: channelName + ": "
          + block.activations[c] }));
        if (block.pool) {
          const py = cy - (pooled * pcell) / 2;
          svg.append(HP.svg("line", { x1: mx + size * cell, y1: cy - 7, x2: px - 2, y2: cy - 7,
            class: "edge", "marker-end": "url(#arrow)" }));
          this._backLine(svg, mx + size * cell, px, cy + 7, lines ? lines[c] : null, channelName);
          this.maps[block.name + ".pool" + c] = this._map(svg, px, py, pcell,
            block.name + " " + block.channels[c] + " pooled", false);
          out.push({ x: px + pooled * pcell, y: cy });
        } else out.push({ x: mx + size * cell, y: cy });
      }
      if (asRun && block.used_from) {
        svg.append(HP.svg("text", { x: kx - 20, y: TOP + BODY + 22, class: "note",
          text: "as run: every channel uses " + block.used_from + "'s kernel" }));
      }
      return [out, end + 46];
    }

    // The backward line of one channel: an arrow from the pool back to the map.
    _backLine(svg, x1, x2, y, line, name) {
      const color = line ? HP.lineColor[line] : "#999999";
      const g = HP.svg("g", { class: "backline", "data-channel": name, "data-line": line || "none" });
      g.append(HP.svg("line", { x1: x2, y1: y, x2: x1 + 4, y2: y, stroke: color, "stroke-width": 3,
        "stroke-dasharray": line === "green" ? "5 3" : line === "red" ? "2 2" : null }));
      g.append(HP.svg("path", { d: "M" + (x1 + 4) + "," + (y - 5) + " L" + (x1 - 3) + "," + y + " L"
        + (x1 + 4) + "," + (y + 5) + "Z", fill: color }));
      g.append(HP.svg("text", { x: (x1 + x2) / 2, y: y + 14, "text-anchor": "middle", class: "linetag",
        fill: color, text: line ? line[0].toUpperCase() : "" }));
      svg.append(g);
    }

    _dense(svg, f, x, sources) {
      const dense = f.blocks.filter((b) => b.kind === "dense");
      const count = dense.length ? dense[0].weight.shape[1] : 0;
      const cell = Math.max(6, Math.min(14, Math.floor(BODY / Math.max(count, 1))));
      const top = TOP + (BODY - count * cell) / 2;
      for (const s of sources) {
        svg.append(HP.svg("line", { x1: s.x, y1: s.y, x2: x, y2: top + (count * cell) / 2, class: "edge" }));
      }
      svg.append(label(x + cell / 2, TOP - 34, "flatten"), label(x + cell / 2, TOP - 18, String(count), "sub"));
      this.maps.flat = this._map(svg, x, top, cell, "flattened features", false);
      let px = x + cell;
      let prevTop = top;
      let prevH = count * cell;
      x += 80;
      for (const block of dense) {
        const n = block.act.shape[0];
        const c = Math.max(6, Math.min(14, Math.floor(BODY / n)));
        const y = TOP + (BODY - n * c) / 2;
        svg.append(HP.svg("polygon", { class: "fan", points: [px, prevTop, x, y, x, y + n * c, px,
          prevTop + prevH].join(" ") }));
        svg.append(label(x + c / 2, TOP - 34, block.name), label(x + c / 2, TOP - 18,
          n + ", " + block.activation, "sub"));
        this.maps[block.name + ".act"] = this._map(svg, x, y, c, block.name + " activation", false);
        px = x + c;
        prevTop = y;
        prevH = n * c;
        x += 84;
      }
      this.outText = HP.svg("text", { x: px + 10, y: TOP + BODY / 2 + 4, class: "out" });
      this.costText = HP.svg("text", { x: px + 10, y: TOP + BODY / 2 + 22, class: "out" });
      svg.append(this.outText, this.costText);
    }

    _legend(svg, lines) {
      const y = H - 22;
      const g = HP.svg("g", { class: "legend-lines" });
      g.append(HP.svg("text", { x: 20, y: y, class: "note", text: lines ? "backward lines:" :
        "backward lines: this rule has none (only the article's line rules do)" }));
      if (lines) {
        const items = [["blue", "B blue: U \u00b7 f\u2032(Z), exact"], ["green", "G green: T(U) \u00b7 f\u2032(Z)"],
          ["red", "R red: (T(mask) \u00b7 up(G)) \u00b7 f\u2032(Z)"]];
        let x = 130;
        for (const [line, text] of items) {
          g.append(HP.svg("line", { x1: x, x2: x + 24, y1: y - 4, y2: y - 4, stroke: HP.lineColor[line],
            "stroke-width": 3, "stroke-dasharray": line === "green" ? "5 3" : line === "red" ? "2 2" : null }));
          g.append(HP.svg("text", { x: x + 30, y: y, class: "note", text: text }));
          x += 60 + 6.2 * text.length;
        }
      }
      svg.append(g);
      const defs = HP.svg("defs");
      const marker = HP.svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5,
        markerWidth: 6, markerHeight: 6, orient: "auto" });
      marker.append(HP.svg("path", { d: "M0,0 L10,5 L0,10 z", fill: "#666" }));
      defs.append(marker);
      svg.append(defs);
    }

    draw(state, rule) {
      const view = state.view;
      const lines = rule.lines;
      const key = JSON.stringify([lines, state.settings.as_run, view.forward.blocks.map((b) => b.name)]);
      if (key !== this.key) {
        this._build(view, lines, state.settings.as_run);
        this.key = key;
      }
      const f = view.forward;
      this.maps.input.update(HP.plane(f.input), 16);
      for (const block of f.blocks) {
        if (block.kind === "conv") {
          const kernels = block.used || block.kernels;
          const kscale = HP.maxAbs([kernels]);
          block.channels.forEach((_, c) => {
            // Each channel on its own scale: ReLU's range is not arctan's.
            const act = HP.plane(block.act, c);
            this.maps[block.name + ".k" + c].update(HP.plane(kernels, c), kscale);
            this.maps[block.name + ".act" + c].update(act, HP.maxAbs([act]));
            if (block.pool) {
              const pool = HP.plane(block.pool, c);
              this.maps[block.name + ".pool" + c].update(pool, HP.maxAbs([pool]));
            }
          });
        } else {
          const act = { rows: block.act.shape[0], cols: 1, data: block.act.data };
          this.maps[block.name + ".act"].update(act, HP.maxAbs([block.act]) || 1);
        }
      }
      const dense = f.blocks.filter((b) => b.kind === "dense");
      const convs = f.blocks.filter((b) => b.kind === "conv");
      const last = convs[convs.length - 1];
      if (dense.length && last && last.pool) {
        const flat = { rows: last.pool.data.length, cols: 1, data: last.pool.data };
        this.maps.flat.update(flat, HP.maxAbs([last.pool]));
      }
      this.outText.textContent = "output " + HP.fmt(f.output) + ", label " + f.label;
      this.costText.textContent = "cost " + HP.fmt(f.cost);
    }
  }

  function label(x, y, text, kind) {
    return HP.svg("text", { x: x, y: y, class: kind || "layer", "text-anchor": "middle", text: text });
  }

  HP.NetworkDiagram = NetworkDiagram;
})(window.HP);
