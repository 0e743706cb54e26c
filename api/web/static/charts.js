// Maestro web UI: metric charts (uPlot 1.6.32), loaded only by the pages
// that have charts. Each <figure class="chart" data-path="<escaped key>">
// of a <section class="charts" data-base data-points> becomes one chart:
// the series of that metric of every run in the section's .chart-runs
// list, fetched (downsampled, max_points) from the UI's JSON route
// <base><run>/metrics/<key>, overlaid on one x axis with a legend naming
// the runs. Drag across a chart to zoom in, double-click to zoom out
// (uPlot's own cursor); the section's #chart-log box redraws every chart
// with a logarithmic y axis. Nothing inline, no eval (script-src 'self',
// connect-src 'self').
"use strict";

(function () {
  var palette = ["#0969da", "#cf222e", "#1a7f37", "#8250df", "#bc4c00",
    "#0a3069", "#bf3989", "#6e5400", "#116329", "#57606a"];
  var height = 260;

  // num is a point's value for the chart: NaN and the infinities (sent as
  // strings) are gaps.
  function num(v) {
    var n = typeof v === "number" ? v : Number(v);
    return isFinite(n) ? n : null;
  }

  // tick labels the y axis: small and large values in exponent form (a
  // log axis over 1e-5 would otherwise read "0").
  function ticks(u, splits) {
    return splits.map(function (v) {
      if (v === null || v === undefined) {
        return "";
      }
      var a = Math.abs(v);
      if (a !== 0 && (a < 1e-3 || a >= 1e6)) {
        return v.toExponential(1);
      }
      return String(Number(v.toPrecision(6)));
    });
  }

  function fetchSeries(url) {
    return fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}}).then(function (r) {
      if (!r.ok) {
        throw new Error("HTTP " + r.status);
      }
      return r.json();
    });
  }

  // align puts the runs' series on one x axis: the step, or the time when
  // every point has the same step (metrics logged without one). Where two
  // points share an x, the later one is drawn.
  function align(histories) {
    var steps = new Set();
    var many = false;
    histories.forEach(function (h) {
      h.points.forEach(function (p) { steps.add(p.step); });
      many = many || h.points.length > 1;
    });
    var byTime = steps.size <= 1 && many;
    var xs = new Set();
    var maps = histories.map(function (h) {
      var m = new Map();
      h.points.forEach(function (p) {
        var x = byTime ? p.timestamp / 1000 : p.step;
        m.set(x, num(p.value));
        xs.add(x);
      });
      return m;
    });
    var x = Array.from(xs).sort(function (a, b) { return a - b; });
    var data = [x];
    maps.forEach(function (m) {
      data.push(x.map(function (v) { return m.has(v) ? m.get(v) : null; }));
    });
    return {data: data, byTime: byTime};
  }

  function note(fig, text) {
    var p = fig.querySelector(".chart-note");
    if (!p) {
      p = document.createElement("p");
      p.className = "chart-note muted";
      p.setAttribute("role", "status");
      fig.querySelector(".plot").after(p);
    }
    p.textContent = text;
    p.hidden = text === "";
  }

  // fillLast replaces the server's latest values with the last points of
  // each run's series, so the data is readable without the canvas.
  function fillLast(fig, runs, histories) {
    var body = fig.querySelector("tbody.last-values");
    if (!body) {
      return;
    }
    body.textContent = "";
    histories.forEach(function (h, i) {
      h.points.slice(-5).forEach(function (p) {
        var tr = document.createElement("tr");
        [runs[i].name, String(p.step), String(p.value)].forEach(function (t) {
          var td = document.createElement("td");
          td.textContent = t;
          tr.appendChild(td);
        });
        body.appendChild(tr);
      });
    });
  }

  // draw makes item's chart, linear or logarithmic. A log axis cannot show
  // values at or below zero: they are left out (and said so), and a series
  // with no positive value stays linear.
  function draw(item, runs, log) {
    var fig = item.fig;
    var plot = fig.querySelector(".plot");
    var data = item.aligned.data;
    if (data[0].length === 0) {
      note(fig, "No points logged.");
      return null;
    }
    var text = "";
    if (log) {
      var positive = false;
      var dropped = false;
      var logData = [data[0]].concat(data.slice(1).map(function (ys) {
        return ys.map(function (v) {
          if (v === null) {
            return null;
          }
          if (v > 0) {
            positive = true;
            return v;
          }
          dropped = true;
          return null;
        });
      }));
      if (positive) {
        data = logData;
        text = dropped ? "Values at or below zero are left out of the logarithmic axis." : "";
      } else {
        log = false;
        text = "No positive values: the axis stays linear.";
      }
    }
    note(fig, text);
    var xLabel = item.aligned.byTime ? "time" : "step";
    var opts = {
      width: Math.max(plot.clientWidth, 280),
      height: height,
      scales: {x: {time: item.aligned.byTime}, y: log ? {distr: 3, log: 10} : {}},
      axes: [{label: xLabel}, {values: ticks, size: 64}],
      cursor: {drag: {x: true, y: false}},
      series: [{label: xLabel}].concat(runs.map(function (r, i) {
        return {label: r.name, stroke: palette[i % palette.length], width: 1.5, spanGaps: true};
      }))
    };
    plot.textContent = "";
    var u = new uPlot(opts, data, plot);
    // The scale drawn, for whoever checks the page (the browser tests).
    fig.setAttribute("data-scale", log ? "log" : "linear");
    return u;
  }

  function setup(sec) {
    var base = sec.getAttribute("data-base");
    var points = sec.getAttribute("data-points") || "1000";
    var runs = Array.prototype.map.call(sec.querySelectorAll(".chart-runs li"), function (li) {
      return {id: li.getAttribute("data-run"), name: li.getAttribute("data-name")};
    });
    var logBox = sec.querySelector("#chart-log");
    var items = [];
    sec.querySelectorAll("figure.chart").forEach(function (fig) {
      var item = {fig: fig, plot: null, aligned: null};
      items.push(item);
      var path = fig.getAttribute("data-path");
      Promise.all(runs.map(function (r) {
        return fetchSeries(base + encodeURIComponent(r.id) + "/metrics/" + path + "?max_points=" + encodeURIComponent(points));
      })).then(function (histories) {
        item.aligned = align(histories);
        fillLast(fig, runs, histories);
        item.plot = draw(item, runs, logBox !== null && logBox.checked);
      }, function (err) {
        note(fig, "The series could not be loaded (" + err.message + ").");
      });
    });
    if (logBox) {
      logBox.addEventListener("change", function () {
        items.forEach(function (item) {
          if (item.aligned) {
            if (item.plot) {
              item.plot.destroy();
            }
            item.plot = draw(item, runs, logBox.checked);
          }
        });
      });
    }
    var timer = 0;
    window.addEventListener("resize", function () {
      clearTimeout(timer);
      timer = setTimeout(function () {
        items.forEach(function (item) {
          if (item.plot) {
            item.plot.setSize({width: Math.max(item.fig.querySelector(".plot").clientWidth, 280), height: height});
          }
        });
      }, 150);
    });
  }

  if (typeof uPlot === "undefined") {
    return;
  }
  document.querySelectorAll("section.charts").forEach(setup);
})();
