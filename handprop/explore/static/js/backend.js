// Where the numbers come from: the local server (live), or an exported copy's
// precomputed traces (static). Both answer the same calls with the same JSON.
"use strict";

(function (HP) {
  class ApiError extends Error {
    constructor(message, status) {
      super(message);
      this.status = status;
    }
  }
  HP.ApiError = ApiError;

  // The server: every call is one request to handprop's JSON API.
  class LiveBackend {
    constructor() {
      this.mode = "live";
    }

    async _request(method, path, body) {
      const start = performance.now();
      const init = { method: method, cache: "no-store" };
      if (body !== undefined) {
        init.headers = { "Content-Type": "application/json" };
        init.body = JSON.stringify(body);
      }
      let response;
      try {
        response = await fetch(path, init);
      } catch (err) {
        throw new ApiError("the server does not answer (was `handprop explore` stopped?)", 0);
      }
      const data = await response.json().catch(() => ({ error: response.statusText }));
      if (!response.ok) throw new ApiError(data.error || "request failed", response.status);
      data.fetch_ms = performance.now() - start;
      return data;
    }

    meta() {
      return this._request("GET", "api/meta");
    }
    // since: the curves the page holds; view: whether the page shows maps now.
    state(since, view) {
      return this._request("POST", "api/state", { since: since, view: view });
    }
    step(steps, since, view) {
      return this._request("POST", "api/step", { steps: steps, since: since, view: view });
    }
    reset(seed, since, view) {
      const body = { since: since, view: view };
      if (seed !== undefined && seed !== null) body.seed = seed;
      return this._request("POST", "api/reset", body);
    }
    settings(changes, since, view) {
      return this._request("POST", "api/settings", Object.assign({ since: since, view: view }, changes));
    }
  }
  HP.LiveBackend = LiveBackend;

  // An exported copy: traces of a few rules and seeds, computed by handprop when the
  // copy was written (window.HANDPROP_EXPORT, from data.js). Steps move between the
  // recorded frames; what was not exported is refused with a message.
  class StaticBackend {
    constructor(data) {
      this.mode = "static";
      this.data = data;
      this.meta_ = data.meta;
      this.settings_ = Object.assign({}, data.meta.defaults);
      this.frame = 0;
      this.generation = 1;
    }

    _trace(rule, seed) {
      return this.data.traces[rule + "|" + seed];
    }

    _summary(trace, label) {
      const frame = trace.frames[this.frame];
      const curve = trace.curve;
      const keep = curve.steps.filter((s) => s <= frame.step).length;
      const angles = {};
      for (const [name, values] of Object.entries(curve.angles)) angles[name] = values.slice(0, keep);
      return {
        label: label, rule: trace.rule, step: frame.run_step, cost: frame.cost,
        angles: frame.angles, diverged_at: frame.diverged_at, predictions: frame.predictions,
        curve: { id: "static-" + this.generation + "-" + this.frame, every: curve.every, start: 0,
          steps: curve.steps.slice(0, keep), cost: curve.cost.slice(0, keep), angles: angles },
      };
    }

    _state() {
      const s = this.settings_;
      const a = this._trace(s.rule, s.seed);
      const frame = a.frames[this.frame];
      const runs = [this._summary(a, "A")];
      if (s.compare) runs.push(this._summary(this._trace(s.compare, s.seed), "B"));
      const train = this.meta_.train_size;
      return Promise.resolve({
        generation: this.generation, step: frame.step, epoch: frame.step / train, train_size: train,
        settings: Object.assign({}, s), runs: runs, view: frame.views[String(s.image)],
        server_ms: 0, fetch_ms: 0,
      });
    }

    meta() {
      return Promise.resolve(this.meta_);
    }
    state() {
      return this._state();
    }
    step(steps) {
      const frames = this.meta_.frames;
      const target = frames[this.frame] + steps;
      let next = frames.findIndex((s) => s >= target);
      if (next < 0) next = frames.length - 1;
      this.frame = next;
      return this._state();
    }
    reset(seed) {
      if (seed !== undefined && seed !== null) this._check("seed", seed);
      if (seed !== undefined && seed !== null) this.settings_.seed = seed;
      this.frame = 0;
      this.generation += 1;
      return this._state();
    }
    settings(changes) {
      for (const [key, value] of Object.entries(changes)) this._check(key, value);
      const restart = ["rule", "seed", "compare"].some(
        (k) => k in changes && changes[k] !== this.settings_[k]);
      Object.assign(this.settings_, changes);
      if (restart) {
        this.frame = 0;
        this.generation += 1;
      }
      return this._state();
    }

    _check(key, value) {
      const m = this.meta_;
      const ok = {
        rule: () => m.rules.some((r) => r.name === value),
        compare: () => value === null || m.rules.some((r) => r.name === value),
        seed: () => m.seeds.includes(value),
        image: () => m.images.selectable.includes(value),
      }[key];
      if (!ok) throw new ApiError(key + " cannot change in this static copy (it was exported with "
        + "fixed settings; run `handprop explore` for everything)", 400);
      if (!ok()) throw new ApiError(key + " " + JSON.stringify(value) + " is not in this static copy", 400);
    }
  }
  HP.StaticBackend = StaticBackend;
})(window.HP);
