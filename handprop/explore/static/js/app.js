// The page: controls, keyboard, views, and the loop that asks the backend and redraws.
"use strict";

(function (HP) {
  const $ = (id) => document.getElementById(id);
  const TABS = ["network", "backward", "training", "compare"];
  HP.timings = []; // per action: server, request and redraw times (ms), newest last

  function nextPaint() {
    return new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 0)));
  }

  class App {
    constructor(backend) {
      this.backend = backend;
      this.state = null;
      this.curves = [];
      this.queue = Promise.resolve();
      this.playing = false;
      this.tab = "network";
      this.diagram = new HP.NetworkDiagram();
      $("diagram").append(this.diagram.node);
      this.forward = new HP.ForwardPanel($("forward"));
      this.backward = new HP.BackwardPanel($("view-backward"));
      this.training = new HP.TrainingPanel($("view-training"));
      this.compare = new HP.ComparePanel($("view-compare"));
    }

    async start() {
      this.meta = await this.backend.meta();
      this.images = this.meta.images.items;
      this._controls();
      this._keyboard();
      this._tabs();
      await this.act("load", () => this.backend.state(this.since(), true));
      document.body.dataset.ready = "true";
    }

    // -- talking to the backend: one request at a time, in order ---------------------
    since() {
      return this.curves.map((c) => ({ id: c.id, count: c.steps.length }));
    }

    // The maps are asked for only when a view shows them (less to compute and send).
    wantsView() {
      return this.tab === "network" || this.tab === "backward";
    }

    act(label, call) {
      const run = async () => {
        const start = performance.now();
        let state;
        try {
          state = await call();
        } catch (err) {
          this.error(err.message || String(err));
          if (this.state) this._sync(this.state, true);
          return null;
        }
        const received = performance.now();
        this.error(null);
        this.render(state);
        await nextPaint();
        const done = performance.now();
        const timing = { label: label, server_ms: state.server_ms, request_ms: received - start,
          render_ms: done - received, total_ms: done - start };
        HP.timings.push(timing);
        if (HP.timings.length > 500) HP.timings.shift();
        $("timing").textContent = "last " + label + ": " + timing.total_ms.toFixed(0) + " ms end to end ("
          + (this.static ? "from the copy's traces" : "handprop " + (state.server_ms || 0).toFixed(1) + " ms")
          + ", redraw " + timing.render_ms.toFixed(0) + " ms)";
        return state;
      };
      this.queue = this.queue.then(run);
      return this.queue;
    }

    error(message) {
      const box = $("error");
      box.hidden = !message;
      box.textContent = message || "";
    }

    // -- drawing ------------------------------------------------------------------------
    _mergeCurves(state) {
      this.curves = state.runs.map((run, i) => {
        const c = run.curve;
        const mine = this.curves[i];
        const keep = mine && mine.id === c.id && c.start <= mine.steps.length ? c.start : 0;
        const base = keep ? mine : { id: c.id, steps: [], cost: [], angles: {} };
        base.steps = base.steps.slice(0, keep).concat(c.steps);
        base.cost = base.cost.slice(0, keep).concat(c.cost);
        for (const [name, values] of Object.entries(c.angles)) {
          base.angles[name] = (base.angles[name] || []).slice(0, keep).concat(values);
        }
        base.id = c.id;
        return base;
      });
    }

    render(state) {
      this.state = state;
      this._mergeCurves(state);
      this._sync(state);
      this._status(state);
      this._drawTab();
    }

    _drawTab() {
      const state = this.state;
      if (!state) return;
      const rule = state.runs[0].rule;
      if (this.wantsView() && !state.view) return; // asked for; drawn when it comes
      if (this.tab === "network") {
        this.diagram.draw(state, rule);
        this.forward.draw(state);
      } else if (this.tab === "backward") this.backward.draw(state, rule);
      else if (this.tab === "training") this.training.draw(state, this.curves, this.images);
      else this.compare.draw(state, this.curves, this.images);
    }

    _status(state) {
      const [a, b] = state.runs;
      $("status-step").textContent = state.step + " (epoch " + state.epoch.toFixed(2) + ")";
      HP.setValue($("status-cost-a"), a.cost, HP.fmtCost(a.cost) + (a.diverged_at ? " (diverged)" : ""));
      $("status-b").hidden = !b;
      if (b) HP.setValue($("status-cost-b"), b.cost, HP.fmtCost(b.cost) + (b.diverged_at ? " (diverged)" : ""));
      const angles = $("status-angles");
      HP.clear(angles).append("A's update angle to exact (probe): ");
      Object.entries(a.angles).forEach(([name, value], i) => {
        if (i) angles.append(", ");
        angles.append(name + " ", HP.valueSpan("status-angle-" + name, value, HP.fmtAngle(value)));
      });
    }

    // The controls show what the state says (also after a refused change, `force`);
    // otherwise the field being typed in is left alone.
    _sync(state, force) {
      const s = state.settings;
      const rule = state.runs[0].rule;
      const active = force ? null : document.activeElement;
      const set = (id, value) => {
        if ($(id) !== active) $(id).value = value;
      };
      set("rule", s.rule);
      set("compare", s.compare || "");
      set("dataset", s.dataset);
      set("image", String(s.image));
      set("lr", s.lr);
      set("momentum", s.momentum);
      set("seed", s.seed);
      set("transform", s.transform || "");
      $("as-run").checked = s.as_run;
      $("rule-summary").textContent = rule.describe + ": " + rule.summary
        + (rule.transform ? " (T = " + rule.transform + ")" : "");
      $("transform").disabled = this.static || !rule.transform;
      for (const [layer, count] of Object.entries(this.meta.line_layers)) {
        for (let c = 0; c < count; c++) {
          const color = rule.lines ? rule.lines[layer][c] : "blue";
          const name = "line-" + layer + "-" + "abcdefghijklmnop"[c];
          for (const input of document.getElementsByName(name)) input.checked = input.value === color;
        }
      }
      $("lines").classList.toggle("inactive", !rule.lines);
    }

    // -- controls -----------------------------------------------------------------------
    _controls() {
      const m = this.meta;
      this.static = this.backend.mode === "static";
      this._fillRules($("rule"), false);
      this._fillRules($("compare"), true);
      const image = $("image");
      const groups = {};
      for (const index of m.images.selectable) {
        const item = this.images[String(index)];
        const group = index < 4 ? "built-in images" : "digits (0s and 1s)";
        if (!groups[group]) image.append(groups[group] = HP.el("optgroup", { label: group }));
        groups[group].append(HP.el("option", { value: String(index), text: item.name }));
      }
      this._lines();
      const change = (id, make) => $(id).addEventListener("change", () => {
        const value = make($(id));
        if (value !== undefined) this.act("settings", () => this.backend.settings(value, this.since(), this.wantsView()));
      });
      change("rule", (e) => ({ rule: e.value }));
      change("compare", (e) => ({ compare: e.value || null }));
      change("dataset", (e) => ({ dataset: e.value }));
      change("image", (e) => ({ image: Number(e.value) }));
      change("transform", (e) => ({ transform: e.value || null }));
      change("as-run", (e) => ({ as_run: e.checked }));
      change("lr", (e) => numberOr(e, "lr"));
      change("momentum", (e) => numberOr(e, "momentum"));
      $("step-btn").addEventListener("click", () => this.step(1));
      $("nsteps-btn").addEventListener("click", () => this.step(this.stepsN()));
      $("play-btn").addEventListener("click", () => this.togglePlay());
      $("reset-btn").addEventListener("click", () => this.reset());
      if (this.static) this._staticMode();
      else $("mode").textContent = "Live: every number on this page is computed by handprop on this computer.";
    }

    _fillRules(select, optional) {
      if (optional) select.append(HP.el("option", { value: "", text: "none" }));
      const families = {};
      for (const rule of this.meta.rules) {
        const family = rule.family || "rules";
        if (!families[family]) select.append(families[family] = HP.el("optgroup", { label: family }));
        families[family].append(HP.el("option", { value: rule.name, text: rule.name, title: rule.summary }));
      }
    }

    _lines() {
      const body = $("lines-body");
      for (const [layer, count] of Object.entries(this.meta.line_layers)) {
        for (let c = 0; c < count; c++) {
          const ch = "abcdefghijklmnop"[c];
          const name = "line-" + layer + "-" + ch;
          const group = HP.el("div", { class: "line-row", role: "radiogroup",
            "aria-label": layer + " channel " + ch + " backward line" });
          group.append(HP.el("span", { class: "line-name", text: layer + " " + ch }));
          for (const color of this.meta.colors) {
            const input = HP.el("input", { type: "radio", name: name, value: color, id: name + "-" + color,
              "aria-label": layer + " channel " + ch + ": " + color + " line" });
            input.addEventListener("change", () => {
              if (!input.checked) return;
              const lines = {};
              lines[layer] = {};
              lines[layer][ch] = color;
              this.act("lines", () => this.backend.settings({ lines: lines }, this.since(), this.wantsView()));
            });
            group.append(HP.el("label", { class: "swatch line-" + color, for: input.id }, [input,
              HP.el("span", { text: color[0].toUpperCase() })]));
          }
          body.append(group);
        }
      }
    }

    _staticMode() {
      const m = this.meta;
      $("mode").textContent = "Static copy, written by `handprop explore --export`: precomputed traces of "
        + m.rules.map((r) => r.name).join(", ") + " for seed" + (m.seeds.length > 1 ? "s " : " ")
        + m.seeds.join(", ") + ", steps 0 to " + m.frames[m.frames.length - 1] + " (" + m.frames.length
        + " frames). Line toggles, the learning rate and the data need the live page (`handprop explore`).";
      for (const id of ["lr", "momentum", "dataset", "as-run", "transform"]) $(id).disabled = true;
      for (const input of $("lines").querySelectorAll("input")) input.disabled = true;
      const seed = $("seed");
      seed.min = Math.min(...m.seeds);
      seed.max = Math.max(...m.seeds);
    }

    stepsN() {
      const n = Math.round(Number($("steps-n").value));
      const limit = this.meta.limits.steps;
      return Math.max(limit[0], Math.min(limit[1], isFinite(n) ? n : 1));
    }

    step(n) {
      return this.act("step " + n, () => this.backend.step(n, this.since(), this.wantsView()));
    }

    reset() {
      const seed = Number($("seed").value);
      this.stopPlay();
      return this.act("reset", () => this.backend.reset(Number.isInteger(seed) ? seed : null, this.since(), this.wantsView()));
    }

    togglePlay() {
      if (this.playing) return this.stopPlay();
      this.playing = true;
      $("play-btn").textContent = "Pause";
      $("play-btn").setAttribute("aria-pressed", "true");
      const loop = async () => {
        while (this.playing) {
          const before = this.state ? this.state.step : -1;
          const state = await this.step(this.stepsN());
          if (!state || state.step === before || state.runs.every((r) => r.diverged_at)) this.stopPlay();
        }
      };
      loop();
    }

    stopPlay() {
      this.playing = false;
      $("play-btn").textContent = "Play";
      $("play-btn").setAttribute("aria-pressed", "false");
    }

    // -- keyboard and tabs --------------------------------------------------------------
    _keyboard() {
      document.addEventListener("keydown", (e) => {
        const tag = e.target.tagName;
        const typing = tag === "INPUT" && !["radio", "checkbox"].includes(e.target.type) || tag === "SELECT"
          || tag === "TEXTAREA";
        if (typing || e.ctrlKey || e.metaKey || e.altKey) return;
        // space on a button, a radio or a checkbox is that control's own
        if (e.key === " " && (tag === "BUTTON" || tag === "INPUT")) return;
        const actions = {
          ".": () => this.step(1), n: () => this.step(this.stepsN()), " ": () => this.togglePlay(),
          r: () => this.reset(), 1: () => this.showTab(TABS[0], true), 2: () => this.showTab(TABS[1], true),
          3: () => this.showTab(TABS[2], true), 4: () => this.showTab(TABS[3], true),
        };
        if (actions[e.key]) {
          e.preventDefault();
          actions[e.key]();
        }
      });
    }

    _tabs() {
      for (const name of TABS) {
        const tab = $("tab-" + name);
        tab.addEventListener("click", () => this.showTab(name, false));
        tab.addEventListener("keydown", (e) => {
          const i = TABS.indexOf(name);
          const next = { ArrowRight: (i + 1) % 4, ArrowLeft: (i + 3) % 4, Home: 0, End: 3 }[e.key];
          if (next === undefined) return;
          e.preventDefault();
          this.showTab(TABS[next], true);
        });
      }
    }

    showTab(name, focus) {
      this.tab = name;
      for (const other of TABS) {
        const on = other === name;
        const tab = $("tab-" + other);
        tab.setAttribute("aria-selected", on ? "true" : "false");
        tab.tabIndex = on ? 0 : -1;
        $("view-" + other).hidden = !on;
      }
      if (focus) $("tab-" + name).focus();
      if (this.wantsView() && this.state && !this.state.view) {
        this.act("view", () => this.backend.state(this.since(), true));
      } else this._drawTab();
    }
  }

  function numberOr(input, name) {
    const value = Number(input.value);
    if (input.value === "" || !isFinite(value)) return undefined;
    const changes = {};
    changes[name] = value;
    return changes;
  }

  HP.App = App;
  window.addEventListener("DOMContentLoaded", () => {
    const backend = window.HANDPROP_EXPORT ? new HP.StaticBackend(window.HANDPROP_EXPORT) : new HP.LiveBackend();
    HP.app = new App(backend);
    HP.app.start().catch((err) => {
      const box = document.getElementById("error");
      box.hidden = false;
      box.textContent = "the page could not start: " + (err.message || err);
    });
  });
})(window.HP);
