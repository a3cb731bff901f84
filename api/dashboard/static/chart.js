/* tlsfleet charts: line and bar charts as plain SVG, drawn from data attributes.
 *
 *   <figure class="chart" data-kind="line|bar" data-labels='["a","b"]'
 *           data-series='[{"name": "TLS 1.0", "values": [3, 2]}]'></figure>
 *
 * Part of tlsfleet; MIT licence. No dependencies, no network, no inline styles (the
 * dashboard's Content-Security-Policy allows neither).
 */
(function () {
  "use strict";
  var NS = "http://www.w3.org/2000/svg";
  // Okabe–Ito: distinguishable with every common colour-vision deficiency.
  var COLOURS = ["#e69f00", "#56b4e9", "#009e73", "#f0e442", "#0072b2", "#d55e00", "#cc79a7"];
  var DASHES = ["", "6 3", "2 3", "8 3 2 3"];
  var W = 600, H = 260, PAD = { left: 44, right: 12, top: 12, bottom: 28 };

  function el(name, attrs, parent) {
    var node = document.createElementNS(NS, name);
    Object.keys(attrs).forEach(function (k) { node.setAttribute(k, String(attrs[k])); });
    if (parent) { parent.appendChild(node); }
    return node;
  }

  function text(parent, x, y, content, anchor) {
    var t = el("text", { x: x, y: y, "text-anchor": anchor || "middle" }, parent);
    t.textContent = content;
    return t;
  }

  // A top that makes four whole-number steps (the charts count endpoints).
  function niceMax(value) {
    var raw = Math.max(value, 1) / 4;
    var mag = Math.pow(10, Math.floor(Math.log10(raw)));
    var steps = [1, 2, 5, 10].map(function (m) { return m * mag; });
    var step = steps.filter(function (s) { return s >= raw; })[0];
    return 4 * Math.max(1, step);
  }

  function frame(svg, labels, top) {
    var plotW = W - PAD.left - PAD.right, plotH = H - PAD.top - PAD.bottom;
    for (var i = 0; i <= 4; i++) {
      var y = PAD.top + plotH - (plotH * i) / 4;
      el("line", { x1: PAD.left, x2: W - PAD.right, y1: y, y2: y, stroke: "#2c343c" }, svg);
      text(svg, PAD.left - 6, y + 4, String(Math.round((top * i) / 4)), "end");
    }
    var every = Math.max(1, Math.ceil(labels.length / 10));
    labels.forEach(function (label, i) {
      if (i % every === 0) {
        text(svg, x(i, labels.length, plotW), H - 8, label);
      }
    });
    return { plotW: plotW, plotH: plotH };
  }

  function x(i, n, plotW) {
    return PAD.left + (n <= 1 ? plotW / 2 : (plotW * (i + 0.5)) / n);
  }

  function line(svg, labels, series) {
    var top = niceMax(Math.max.apply(null, [0].concat.apply([], series.map(function (s) { return s.values; }))));
    var box = frame(svg, labels, top);
    series.forEach(function (s, k) {
      var colour = COLOURS[k % COLOURS.length];
      var points = s.values.map(function (v, i) {
        return x(i, labels.length, box.plotW) + "," + (PAD.top + box.plotH - (box.plotH * v) / top);
      });
      if (points.length) {
        el("polyline", { points: points.join(" "), fill: "none", stroke: colour, "stroke-width": 3,
          "stroke-dasharray": DASHES[k % DASHES.length] }, svg);
      }
      points.forEach(function (p, i) {
        var xy = p.split(",");
        var dot = el("circle", { cx: xy[0], cy: xy[1], r: 4, fill: colour }, svg);
        el("title", {}, dot).textContent = s.name + " " + labels[i] + ": " + s.values[i];
      });
    });
  }

  function bar(svg, labels, series) {
    var top = niceMax(Math.max.apply(null, [0].concat.apply([], series.map(function (s) { return s.values; }))));
    var box = frame(svg, labels, top);
    var slot = box.plotW / Math.max(labels.length, 1);
    var width = (slot * 0.8) / Math.max(series.length, 1);
    series.forEach(function (s, k) {
      var colour = COLOURS[(k * 2 + 1) % COLOURS.length];
      s.values.forEach(function (v, i) {
        var h = (box.plotH * v) / top;
        var left = PAD.left + slot * i + slot * 0.1 + width * k;
        var rect = el("rect", { x: left, y: PAD.top + box.plotH - h, width: width - 2, height: h, fill: colour }, svg);
        el("title", {}, rect).textContent = s.name + " " + labels[i] + ": " + v;
        if (v > 0) { text(svg, left + width / 2, PAD.top + box.plotH - h - 3, String(v)); }
      });
    });
  }

  function legend(figure, series, kind) {
    var box = document.createElement("div");
    box.className = "legend";
    series.forEach(function (s, k) {
      var item = document.createElement("span");
      var swatch = el("svg", { width: 26, height: 10, "aria-hidden": "true" });
      var colour = kind === "bar" ? COLOURS[(k * 2 + 1) % COLOURS.length] : COLOURS[k % COLOURS.length];
      el("line", { x1: 0, x2: 26, y1: 5, y2: 5, stroke: colour, "stroke-width": 4,
        "stroke-dasharray": kind === "bar" ? "" : DASHES[k % DASHES.length] }, swatch);
      item.appendChild(swatch);
      item.appendChild(document.createTextNode(" " + s.name));
      box.appendChild(item);
    });
    figure.appendChild(box);
  }

  function draw(figure) {
    var labels = JSON.parse(figure.getAttribute("data-labels") || "[]");
    var series = JSON.parse(figure.getAttribute("data-series") || "[]");
    var kind = figure.getAttribute("data-kind");
    var svg = el("svg", { viewBox: "0 0 " + W + " " + (H + 4), preserveAspectRatio: "none", role: "img",
      "aria-label": series.map(function (s) { return s.name; }).join(", ") });
    if (!labels.length) {
      text(svg, W / 2, H / 2, "no closed sweep yet");
    } else if (kind === "bar") {
      bar(svg, labels, series);
    } else {
      line(svg, labels, series);
    }
    figure.appendChild(svg);
    legend(figure, series, kind);
    figure.setAttribute("data-drawn", "true");
  }

  document.addEventListener("DOMContentLoaded", function () {
    Array.prototype.forEach.call(document.querySelectorAll("figure.chart"), draw);
  });
})();
