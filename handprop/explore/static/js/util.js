// handprop explore: shared helpers (DOM, numbers, colours).
//
// Every script of the page is a classic script that adds to one namespace, window.HP,
// so that the same files run when served by `handprop explore` and when opened from
// file:// as an exported copy (Chromium refuses ES modules and fetch() from file://).
// The page computes nothing: every number comes from handprop, through the backend.
"use strict";
window.HP = window.HP || {};

(function (HP) {
  const SVG_NS = "http://www.w3.org/2000/svg";

  // An HTML element: el("div", {class: "x", text: "hi"}, [children]).
  HP.el = function (tag, attrs, children) {
    const node = document.createElement(tag);
    setAttributes(node, attrs);
    for (const child of children || []) if (child) node.append(child);
    return node;
  };

  // An SVG element, same form.
  HP.svg = function (tag, attrs, children) {
    const node = document.createElementNS(SVG_NS, tag);
    setAttributes(node, attrs);
    for (const child of children || []) if (child) node.append(child);
    return node;
  };

  function setAttributes(node, attrs) {
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : value);
    }
  }

  HP.clear = function (node) {
    while (node.firstChild) node.removeChild(node.firstChild);
    return node;
  };

  // -- numbers --------------------------------------------------------------------
  // A number for people: 4 significant digits, exponent form when very large or small.
  HP.fmt = function (value, digits) {
    if (value === null || value === undefined) return "n/a";
    const d = digits || 4;
    if (value === 0) return "0";
    const a = Math.abs(value);
    if (a >= 1e5 || a < 1e-3) return value.toExponential(d - 1);
    return Number(value.toPrecision(d)).toString();
  };

  // An angle in degrees, one decimal; "undefined" when handprop says it is (null).
  HP.fmtAngle = function (value) {
    return value === null || value === undefined ? "undefined" : value.toFixed(1) + "\u00b0";
  };

  // The cost: 6 significant digits (the test compares it with the API's value).
  HP.fmtCost = function (value) {
    return value === null || value === undefined ? "n/a" : Number(value.toPrecision(6)).toString();
  };

  // An array from the API: {shape, data} (flat, row-major).
  HP.size = function (arr) {
    return arr ? arr.data.length : 0;
  };
  HP.maxAbs = function (arrays) {
    let top = 0;
    for (const arr of arrays) {
      if (!arr) continue;
      for (const v of arr.data) if (v !== null && Math.abs(v) > top) top = Math.abs(v);
    }
    return top;
  };
  // One plane (rows x cols) of an array: plane(arr, k) for arr of shape (K, rows, cols).
  HP.plane = function (arr, k) {
    if (!arr) return null;
    const shape = arr.shape;
    const rows = shape.length >= 2 ? shape[shape.length - 2] : 1;
    const cols = shape[shape.length - 1];
    const start = (k || 0) * rows * cols;
    return { rows: rows, cols: cols, data: arr.data.slice(start, start + rows * cols) };
  };

  // -- colours --------------------------------------------------------------------
  // Okabe-Ito, a palette that stays distinct under the common colour-vision deficiencies.
  HP.okabe = {
    orange: "#E69F00", sky: "#56B4E9", green: "#009E73", yellow: "#F0E442",
    blue: "#0072B2", vermillion: "#D55E00", purple: "#CC79A7", black: "#000000",
  };
  // The article's three lines, in Okabe-Ito's blue, bluish green and vermillion.
  HP.lineColor = { blue: HP.okabe.blue, green: HP.okabe.green, red: HP.okabe.vermillion };
  HP.layerColor = {
    conv1: HP.okabe.orange, conv2: HP.okabe.sky, fc3: HP.okabe.green,
    fc4: HP.okabe.purple, fc5: HP.okabe.black,
  };
  HP.layerDash = { conv1: "", conv2: "6 3", fc3: "2 2", fc4: "8 3 2 3", fc5: "1 3" };
  HP.runColor = [HP.okabe.blue, HP.okabe.vermillion];
  HP.runDash = ["", "6 3"];

  // Diverging map with a neutral zero: blue (negative), near-white (0), orange-brown
  // (positive); blue/orange stays readable with red-green colour blindness.
  const STOPS = [
    [-1.0, [5, 48, 97]], [-0.6, [33, 102, 172]], [-0.3, [146, 197, 222]],
    [0.0, [247, 247, 247]], [0.3, [253, 184, 99]], [0.6, [224, 130, 20]], [1.0, [127, 59, 8]],
  ];
  const LUT = [];
  for (let i = 0; i <= 256; i++) LUT.push(interpolate(-1 + (2 * i) / 256));
  function interpolate(t) {
    for (let s = 1; s < STOPS.length; s++) {
      const [t1, c1] = STOPS[s];
      const [t0, c0] = STOPS[s - 1];
      if (t <= t1) {
        const f = (t - t0) / (t1 - t0);
        const c = c0.map((v, k) => Math.round(v + f * (c1[k] - v)));
        return "rgb(" + c.join(",") + ")";
      }
    }
    return "rgb(127,59,8)";
  }
  // The colour of value v on a symmetric scale [-scale, scale].
  HP.diverging = function (v, scale) {
    if (v === null || v === undefined) return "#bbbbbb";
    if (!(scale > 0)) return LUT[128];
    const t = Math.max(-1, Math.min(1, v / scale));
    return LUT[Math.round((t + 1) * 128)];
  };
  // Digits: ink dark on white (0..16 raw pixels).
  HP.ink = function (v, top) {
    const g = Math.round(255 - (255 * Math.max(0, Math.min(1, v / (top || 16)))));
    return "rgb(" + g + "," + g + "," + g + ")";
  };
})(window.HP);
