// The page's views: forward details, the backward pass beside the exact one, training
// curves and test predictions, and the comparison of two rules.
"use strict";

(function (HP) {
  const el = HP.el;

  // Heatmaps by name, built once per structure and recoloured on every update.
  class Slots {
    constructor() {
      this.maps = {};
    }
    map(name, options) {
      const map = new HP.Heatmap(Object.assign({ label: name }, options));
      this.maps[name] = map;
      return map.node;
    }
    set(name, plane, scale, shape) {
      const map = this.maps[name];
      if (map) map.update(plane, scale, shape);
    }
  }

  function cellFor(size, target) {
    return Math.max(4, Math.round((target || 96) / size));
  }

  function valueSpan(id, value, text) {
    const span = el("span", { id: id, class: "value", "data-value": value === null ? "null" : String(value) });
    span.textContent = text;
    return span;
  }
  HP.valueSpan = valueSpan;

  function setValue(node, value, text) {
    node.dataset.value = value === null || value === undefined ? "null" : String(value);
    node.textContent = text;
  }
  HP.setValue = setValue;

  // -- forward ----------------------------------------------------------------------
  class ForwardPanel {
    constructor(root) {
      this.root = root;
      this.key = null;
    }

    _build(view) {
      const root = HP.clear(this.root);
      this.slots = new Slots();
      const f = view.forward;
      this.out = el("p", { class: "output" });
      root.append(el("h2", { text: "Forward pass" }), this.out);
      for (const block of f.blocks) root.append(block.kind === "conv" ? this._conv(block) : this._dense(block));
    }

    _conv(block) {
      const s = this.slots;
      const size = block.pre.shape[1];
      const pooled = block.pool ? block.pool.shape[1] : size;
      const cols = [["kernel", "kernel " + (block.used_from ? "(own, unused as run)" : "W")],
        ["pre", "pre-activation Z"], ["act", "activation f(Z)"]];
      if (block.used_from) cols.splice(1, 0, ["used", "kernel used (" + block.used_from + ")"]);
      if (block.pool) cols.push(["pool", "max-pooled"]);
      const head = el("tr", {}, [el("th", { text: "channel" })].concat(cols.map(([, t]) => el("th", { text: t }))));
      const body = block.channels.map((ch, c) => el("tr", {}, [el("th", { scope: "row",
        text: block.name.replace(/\D/g, "") + ch + " (" + block.activations[c] + ")" })].concat(
        cols.map(([key]) => {
          const n = key === "kernel" || key === "used" ? 3 : key === "pool" ? pooled : size;
          const caption = el("figcaption");
          this.captions[block.name + "." + key + c] = caption;
          return el("td", {}, [el("figure", {}, [s.map(block.name + "." + key + c,
            { cell: cellFor(n, key === "pool" ? 64 : 96) }), caption])]);
        }))));
      return el("section", { class: "block" }, [
        el("h3", { text: block.name + ": " + block.channels.length + " channels" }),
        el("p", { class: "note", text: "Kernels share one colour scale per layer; each map has its own "
          + "(\u00b1 its largest value, under it): a ReLU map and an arctan map differ in range." }),
        el("table", { class: "maps" }, [el("thead", {}, [head]), el("tbody", {}, body)]),
      ]);
    }

    _dense(block) {
      const s = this.slots;
      const n = block.act.shape[0];
      const inputs = block.weight.shape[1];
      const cell = Math.max(6, Math.min(16, Math.floor(420 / n)));
      return el("section", { class: "block" }, [
        el("h3", { text: block.name + ": dense " + inputs + " \u2192 " + n + ", " + block.activation }),
        el("div", { class: "row" }, [
          el("figure", {}, [s.map(block.name + ".pre", { cell: cell }), el("figcaption", { text: "pre-activation z" })]),
          el("figure", {}, [s.map(block.name + ".act", { cell: cell }), el("figcaption", { text: "activation f(z)" })]),
          el("figure", {}, [s.map(block.name + ".weight", { cell: Math.max(3, Math.min(6, Math.floor(160 / inputs))) }),
            el("figcaption", { text: "weight (" + n + " \u00d7 " + inputs + ")" })]),
        ]),
      ]);
    }

    draw(state) {
      const view = state.view;
      const key = JSON.stringify([state.settings.as_run, view.forward.blocks.map((b) => b.name)]);
      if (key !== this.key) {
        this.captions = {};
        this._build(view);
        this.key = key;
      }
      const f = view.forward;
      const s = this.slots;
      for (const block of f.blocks) {
        if (block.kind === "conv") {
          for (const key of ["kernels", "used", "pre", "act", "pool"]) {
            const arr = block[key];
            if (!arr) continue;
            const name = key === "kernels" ? "kernel" : key;
            const shared = HP.maxAbs([arr]);
            block.channels.forEach((_, c) => {
              const plane = HP.plane(arr, c);
              const scale = key === "kernels" || key === "used" ? shared : HP.maxAbs([plane]);
              s.set(block.name + "." + name + c, plane, scale);
              this.captions[block.name + "." + name + c].textContent = "\u00b1" + HP.fmt(scale, 3);
            });
          }
        } else {
          const row = (arr) => ({ rows: 1, cols: arr.data.length, data: arr.data });
          s.set(block.name + ".pre", row(block.pre), HP.maxAbs([block.pre]));
          s.set(block.name + ".act", row(block.act), HP.maxAbs([block.act]));
          s.set(block.name + ".weight", HP.plane(block.weight), HP.maxAbs([block.weight]));
        }
      }
      HP.clear(this.out).append("Image: " + view.name + ". Output p = ",
        valueSpan("forward-output", f.output, HP.fmt(f.output, 6)), ", label y = " + f.label
        + ", cost \u00bd(p \u2212 y)\u00b2 = ", valueSpan("forward-cost", f.cost, HP.fmtCost(f.cost)), ".");
    }
  }
  HP.ForwardPanel = ForwardPanel;

  // -- backward ---------------------------------------------------------------------
  class BackwardPanel {
    constructor(root) {
      this.root = root;
      this.key = null;
    }

    _build(state, rule) {
      const root = HP.clear(this.root);
      this.slots = new Slots();
      this.angles = {};
      this.head = el("p", { class: "lede" });
      root.append(el("h2", { text: "Backward pass: the rule beside exact back-propagation" }), this.head);
      const blocks = state.view.backward.blocks.slice().reverse();
      const lines = rule.lines || {};
      for (const block of blocks) root.append(this._block(block, lines[block.name]));
    }

    _block(block, lines) {
      const angle = valueSpan("bw-angle-" + block.name, null, "");
      const sign = el("span", { class: "sign" });
      this.angles[block.name] = { angle: angle, sign: sign, cells: {} };
      const title = el("h3", {}, [block.name + ": update angle to exact ", angle, sign]);
      const section = el("section", { class: "block", id: "bw-" + block.name }, [title]);
      if (block.kind === "conv") section.append(this._convTable(block, lines));
      else section.append(this._denseTable(block));
      return section;
    }

    _convTable(block, lines) {
      const q0 = block.quantities[0];
      const count = (q0.exact || q0.rule).shape[0];
      const channels = "abcdefghijklmnop".slice(0, count).split("");
      const head = el("tr", {}, [el("th", { text: "" })].concat(channels.map((ch, c) => {
        const line = lines ? lines[c] : null;
        const th = el("th", { class: "chan-head" }, [block.name.replace(/\D/g, "") + ch]);
        if (line) th.append(el("span", { class: "linetag line-" + line, text: " " + line + " line" }));
        return th;
      })));
      const rows = block.quantities.map((q) => {
        const arr = q.exact || q.rule;
        const size = arr.shape[arr.shape.length - 1];
        const cell = cellFor(size, q.key === "update" ? 42 : 64);
        return el("tr", {}, [el("th", { scope: "row", class: "qlabel", text: q.label })].concat(
          channels.map((ch, c) => {
            const name = block.name + "." + q.key + c;
            const angle = el("div", { class: "cell-angle" });
            this.angles[block.name].cells[q.key + c] = angle;
            return el("td", {}, [el("div", { class: "pair" }, [
              el("figure", {}, [this.slots.map(name + ".rule", { cell: cell }), el("figcaption", { text: "rule" })]),
              el("figure", {}, [this.slots.map(name + ".exact", { cell: cell }), el("figcaption", { text: "exact" })]),
            ]), angle]);
          })));
      });
      return el("table", { class: "maps backward" }, [el("thead", {}, [head]), el("tbody", {}, rows)]);
    }

    _denseTable(block) {
      const rows = block.quantities.map((q) => {
        const arr = q.exact || q.rule;
        const matrix = arr.shape.length === 2;
        const n = arr.shape[arr.shape.length - 1];
        const cell = matrix ? Math.max(3, Math.min(6, Math.floor(160 / n))) : Math.max(5, Math.min(12, Math.floor(340 / n)));
        const angle = el("td", { class: "cell-angle" });
        this.angles[block.name].cells[q.key] = angle;
        return el("tr", {}, [el("th", { scope: "row", class: "qlabel", text: q.label }),
          el("td", {}, [this.slots.map(block.name + "." + q.key + ".rule", { cell: cell })]),
          el("td", {}, [this.slots.map(block.name + "." + q.key + ".exact", { cell: cell })]), angle]);
      });
      const head = el("tr", {}, ["", "rule", "exact", "angle"].map((t) => el("th", { text: t })));
      return el("table", { class: "maps backward dense" }, [el("thead", {}, [head]), el("tbody", {}, rows)]);
    }

    draw(state, rule) {
      const key = JSON.stringify([rule.lines, state.view.backward.blocks.map((b) => b.name)]);
      if (key !== this.key) {
        this._build(state, rule);
        this.key = key;
      }
      HP.clear(this.head).append("Image: " + state.view.name + ". Rule ", el("strong", { text: rule.describe }),
        " (" + rule.summary + ")" + (rule.transform && !rule.summary.includes("T=") ? ", T = " + rule.transform : "")
        + ". Each pair: the rule's map (left) and the exact one (right) on one colour scale; "
        + "the angle is between the two (0\u00b0: same direction, 90\u00b0: unrelated, 180\u00b0: opposite).");
      for (const block of state.view.backward.blocks) this._drawBlock(block);
    }

    _drawBlock(block) {
      const slots = this.slots;
      const info = this.angles[block.name];
      setValue(info.angle, block.angle, HP.fmtAngle(block.angle));
      info.sign.textContent = block.sign_agreement === null ? "" : ", signs agree on "
        + (100 * block.sign_agreement).toFixed(0) + "% of the weights";
      for (const q of block.quantities) {
        const shape = (q.exact || q.rule).shape;
        if (block.kind === "conv") {
          const count = shape[0];
          for (let c = 0; c < count; c++) {
            const pr = HP.plane(q.rule, c);
            const pe = HP.plane(q.exact, c);
            const scale = HP.maxAbs([pr, pe]);
            const dims = shape.slice(-2);
            slots.set(block.name + "." + q.key + c + ".rule", pr, scale, dims);
            slots.set(block.name + "." + q.key + c + ".exact", pe, scale, dims);
            const a = q.angles ? q.angles[c] : null;
            setValue(info.cells[q.key + c], a, (q.rule ? "" : "nothing flows here; ") + "angle " + HP.fmtAngle(a));
          }
        } else {
          const toPlane = (arr) => (arr ? (arr.shape.length === 2 ? HP.plane(arr) :
            { rows: 1, cols: arr.data.length, data: arr.data }) : null);
          const pr = toPlane(q.rule);
          const pe = toPlane(q.exact);
          const scale = HP.maxAbs([pr, pe]);
          const dims = shape.length === 2 ? shape : [1, shape[0]];
          slots.set(block.name + "." + q.key + ".rule", pr, scale, dims);
          slots.set(block.name + "." + q.key + ".exact", pe, scale, dims);
          setValue(info.cells[q.key], q.angles, HP.fmtAngle(q.angles));
        }
      }
    }
  }
  HP.BackwardPanel = BackwardPanel;

  // -- training ---------------------------------------------------------------------
  function costSeries(curve, index, label) {
    return { name: label, color: HP.runColor[index], dash: HP.runDash[index], xs: curve.steps, ys: curve.cost };
  }
  function angleSeries(curve) {
    return Object.keys(curve.angles).map((name) => ({ name: name, color: HP.layerColor[name] || "#444",
      dash: HP.layerDash[name] || "", xs: curve.steps, ys: curve.angles[name] }));
  }

  // The test images with the run's predictions: thumbnail, truth, output, verdict.
  function predictions(run, images) {
    const list = el("ul", { class: "preds", "aria-label": "test images, run " + run.label });
    for (const p of run.predictions) {
      const item = images[String(p.image)];
      const map = new HP.Heatmap({ cell: 4, ink: true, label: item ? item.name : "image " + p.image });
      if (item) map.update({ rows: 8, cols: 8, data: item.pixels }, 16);
      const right = p.predicted === p.truth;
      list.append(el("li", { class: right ? "right" : "wrong" }, [map.node,
        el("span", { text: "truth " + p.truth }),
        el("span", { text: "output " + HP.fmt(p.raw, 3) }),
        el("span", { class: "verdict", text: (p.predicted === null ? "n/a" : "\u2192 " + p.predicted)
          + (right ? " \u2713 right" : " \u2717 wrong") })]));
    }
    return list;
  }

  function angleSummary(run) {
    const parts = Object.entries(run.angles).map(([name, a]) => name + " " + HP.fmtAngle(a));
    return "update angle to exact on the probe images: " + parts.join(", ");
  }

  class TrainingPanel {
    constructor(root) {
      this.root = root;
      this.cost = new HP.LineChart({ title: "training-set cost (sum over the training images, the article's total cost)",
        yLabel: "cost" });
      this.angles = new HP.LineChart({ title: "update angle to the exact gradient, per layer (probe images)",
        yLabel: "degrees", y: [0, 180], refLines: [90] });
      this.status = el("p", { class: "lede" });
      this.anglesText = el("p", { class: "note" });
      this.preds = el("div");
      root.append(el("h2", { text: "Training" }), this.status, this.cost.node, this.angles.node,
        this.anglesText, el("h3", { text: "Test images" }), this.preds);
    }

    draw(state, curves, images) {
      const run = state.runs[0];
      HP.clear(this.status).append("Rule " + run.rule.describe + ", step " + state.step + " (epoch "
        + state.epoch.toFixed(2) + " of " + state.train_size + " images), training-set cost ",
        valueSpan("train-cost", run.cost, HP.fmtCost(run.cost)),
        run.diverged_at ? ". Diverged at step " + run.diverged_at + ": reset to go on." : ".");
      this.cost.draw([costSeries(curves[0], 0, run.rule.describe)]);
      this.angles.draw(angleSeries(curves[0]));
      this.anglesText.textContent = angleSummary(run);
      const right = run.predictions.filter((p) => p.predicted === p.truth).length;
      HP.clear(this.preds).append(el("p", { text: right + " of " + run.predictions.length + " right" }),
        predictions(run, images));
    }
  }
  HP.TrainingPanel = TrainingPanel;

  // -- compare ----------------------------------------------------------------------
  class ComparePanel {
    constructor(root) {
      this.root = root;
      this.overlay = new HP.LineChart({ title: "training-set cost, A and B from the same initial weights", yLabel: "cost" });
      this.columns = [0, 1].map((i) => ({
        head: el("h3"),
        cost: new HP.LineChart({ title: "cost, run " + "AB"[i], yLabel: "cost", width: 420, height: 180 }),
        angles: new HP.LineChart({ title: "update angle to exact, run " + "AB"[i], yLabel: "degrees",
          y: [0, 180], refLines: [90], width: 420, height: 180 }),
        text: el("p", { class: "note" }),
        preds: el("div"),
      }));
      this.empty = el("p", { class: "lede", text: "Choose a rule B under \u201cCompare\u201d in the controls: "
        + "it trains from the same initial weights as rule A, step by step beside it." });
      this.body = el("div", { class: "compare" }, this.columns.map((c) => el("div", { class: "column" },
        [c.head, c.cost.node, c.angles.node, c.text, c.preds])));
      root.append(el("h2", { text: "Compare two rules" }), this.empty, this.overlay.node, this.body);
    }

    draw(state, curves, images) {
      const two = state.runs.length > 1;
      this.empty.hidden = two;
      this.overlay.node.style.display = two ? "" : "none";
      this.body.hidden = !two;
      if (!two) return;
      this.overlay.draw(state.runs.map((run, i) => costSeries(curves[i], i, "AB"[i] + ": " + run.rule.describe)));
      let hi = 0;
      for (const c of curves) for (const v of c.cost) if (v !== null && v > hi) hi = v;
      state.runs.forEach((run, i) => {
        const col = this.columns[i];
        HP.clear(col.head).append("Run " + run.label + ": " + run.rule.describe + ", cost ",
          valueSpan("cmp-cost-" + run.label, run.cost, HP.fmtCost(run.cost)));
        col.cost.draw([costSeries(curves[i], i, "")], [0, hi || 1]);
        col.angles.draw(angleSeries(curves[i]));
        col.text.textContent = angleSummary(run) + (run.diverged_at ? "; diverged at step " + run.diverged_at : "");
        HP.clear(col.preds).append(predictions(run, images));
      });
    }
  }
  HP.ComparePanel = ComparePanel;
})(window.HP);
