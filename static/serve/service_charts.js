// Charts of a service's versions (request rate, error rate, p50, p99) with uPlot
// (static/vendor/uplot, MIT), fetched once there is something to draw (console.js).
// Reads the page's metrics URL every 5 s.
(function () {
  "use strict";
  var COLORS = ["#3b6fe0", "#d9822b", "#2f9e5b", "#b03ac4", "#c23b3b"];
  var plots = {};

  function build(series, metric) {
    var times = {};
    series.forEach(function (v) { v.points.forEach(function (p) { times[p.t] = true; }); });
    var xs = Object.keys(times).map(Number).sort(function (a, b) { return a - b; });
    var data = [xs];
    series.forEach(function (v) {
      var byTime = {};
      v.points.forEach(function (p) { byTime[p.t] = p[metric]; });
      data.push(xs.map(function (t) { return byTime[t] === undefined ? null : byTime[t]; }));
    });
    return data;
  }

  function draw(root, body) {
    var series = body.versions || [];
    var any = series.some(function (v) { return v.points.length > 0; });
    root.classList.toggle("has-data", any);
    if (!any) return;
    window.raydeckCharts(root)
      .then(function () { drawAll(root, series); })
      .catch(function () { /* the next round tries again */ });
  }

  function drawAll(root, series) {
    var key = series.map(function (v) { return v.version; }).join(",");
    root.querySelectorAll(".chart").forEach(function (el) {
      var metric = el.getAttribute("data-metric");
      var data = build(series, metric);
      var plot = plots[metric];
      if (plot && plot.key === key) { plot.chart.setData(data); return; }
      if (plot) plot.chart.destroy();
      var opts = {
        title: el.getAttribute("data-title"),
        width: Math.max(280, el.clientWidth || 480),
        height: 180,
        series: [{}].concat(series.map(function (v, i) {
          return { label: "v" + v.version, stroke: COLORS[i % COLORS.length], width: 2, spanGaps: true };
        })),
        axes: [{}, { size: 56 }]
      };
      plots[metric] = { key: key, chart: new uPlot(opts, data, el) };
    });
  }

  function refresh(root) {
    fetch(root.getAttribute("data-metrics-url"), { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : { versions: [] }; })
      .then(function (body) { draw(root, body); })
      .catch(function () { /* the next round tries again */ });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var root = document.getElementById("service-charts");
    if (!root) return;
    refresh(root);
    setInterval(function () { refresh(root); }, 5000);
  });
})();
