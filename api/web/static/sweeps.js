// Maestro web UI: a sweep's objective over its trials (uPlot 1.6.32),
// loaded only by the sweep page. The page renders the values in the table
// .sweep-progress of the figure .sweep-chart (one row per ended trial, in
// end order, with data-trial, data-objective and data-best; an empty value
// is none), so they are readable without the canvas; this draws them: the
// trials' objectives as points and the best so far as a step line. Nothing
// inline, no eval (script-src 'self').
"use strict";

(function () {
  var fig = document.querySelector("figure.sweep-chart");
  if (!fig || typeof uPlot === "undefined") {
    return;
  }
  var plot = fig.querySelector(".plot");
  var rows = fig.querySelectorAll("table.sweep-progress tbody tr[data-trial]");
  function num(s) {
    if (s === null || s === undefined || s === "") {
      return null;
    }
    var n = Number(s);
    return isFinite(n) ? n : null;
  }
  var x = [], objective = [], best = [];
  rows.forEach(function (tr, i) {
    x.push(i + 1);
    objective.push(num(tr.getAttribute("data-objective")));
    best.push(num(tr.getAttribute("data-best")));
  });
  if (x.length === 0) {
    var p = document.createElement("p");
    p.className = "chart-note muted";
    p.textContent = "No trial has ended yet.";
    plot.appendChild(p);
    return;
  }
  var trialOf = Array.prototype.map.call(rows, function (tr) { return tr.getAttribute("data-trial"); });
  var metric = fig.getAttribute("data-metric") || "objective";
  var opts = {
    width: Math.max(300, plot.clientWidth || 600),
    height: 260,
    scales: {x: {time: false}},
    axes: [{label: "trials ended", values: function (u, splits) {
      return splits.map(function (v) { return Number.isInteger(v) ? String(v) : ""; });
    }}, {size: 64}],
    series: [
      {label: "trial", value: function (u, v) { return v === null || v === undefined ? "" : "trial " + trialOf[v - 1]; }},
      {label: metric, stroke: "#0969da", width: 0, points: {show: true, size: 7, fill: "#0969da"}},
      {label: "best so far", stroke: "#1a7f37", width: 2, paths: uPlot.paths.stepped({align: 1}), points: {show: false}}
    ]
  };
  var u = new uPlot(opts, [x, objective, best], plot);
  if (typeof ResizeObserver !== "undefined") {
    new ResizeObserver(function () {
      u.setSize({width: Math.max(300, plot.clientWidth), height: 260});
    }).observe(plot);
  }
})();
