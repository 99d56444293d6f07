// The cluster page's charts over the last hour (their queries: clusters/charts.py) with
// uPlot (static/vendor/uplot, MIT), fetched once the data is in (console.js).
// The data comes straight from Prometheus on the cluster's gateway, with a short-lived
// token the console only vends (ClusterMetricsTokenView); nothing of it passes through
// Raydeck.
(function () {
  "use strict";
  var WINDOW = 3600;  // seconds shown
  var STEP = 30;  // seconds between points
  var REFRESH = 15000;  // ms between reads
  var plots = {};
  var access = null;
  var started = false;

  function csrf() {
    try {
      return JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRFToken"] || "";
    } catch (e) {
      return "";
    }
  }

  function token(root) {
    if (access && Date.parse(access.expires_at) - Date.now() > 30000) {
      return Promise.resolve(access);
    }
    return fetch(root.getAttribute("data-token-url"), {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-CSRFToken": csrf() }
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (body) {
        if (!r.ok) throw new Error((body.unavailable || "the console answered " + r.status).replace(/^metrics unavailable: /, ""));
        access = body;
        return body;
      });
    });
  }

  function query(a, promql) {
    var end = Math.floor(Date.now() / 1000);
    var params = new URLSearchParams({ query: promql, start: end - WINDOW, end: end, step: STEP });
    return fetch(a.query_url + "?" + params.toString(), {
      credentials: "omit",
      headers: { Authorization: "Bearer " + a.token }
    }).catch(function (err) {
      throw new Error("the cluster's gateway did not answer (" + err.message + ")");
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (body) {
        if (r.status === 404) throw new Error("Prometheus is not running on the head");
        if (!r.ok || body.status !== "success") {
          var why = body.error ? (body.error.message || body.error) : "HTTP " + r.status;
          throw new Error("Prometheus answered: " + why);
        }
        return body.data.result;
      });
    });
  }

  function draw(el, result) {
    var values = result.length ? result[0].values : [];
    var data = [
      values.map(function (p) { return p[0]; }),
      values.map(function (p) { return Number(p[1]); })
    ];
    el.setAttribute("data-points", String(values.length));
    var plot = plots[el.getAttribute("data-query")];
    if (plot) { plot.setData(data); return values.length; }
    plots[el.getAttribute("data-query")] = new uPlot({
      title: el.getAttribute("data-title"),
      width: Math.max(260, el.clientWidth || 420),
      height: 160,
      series: [{}, { label: el.getAttribute("data-title"), stroke: "#3b6fe0", width: 2, spanGaps: true }],
      legend: { show: false },
      axes: [{}, { size: 56 }]
    }, data, el);
    return values.length;
  }

  function refresh(root) {
    var status = root.querySelector(".metrics-status");
    var charts = Array.prototype.slice.call(root.querySelectorAll(".chart"));
    token(root).then(function (a) {
      return Promise.all(charts.map(function (el) { return query(a, el.getAttribute("data-query")); }));
    }).then(function (results) {
      return window.raydeckCharts(root).then(function () {
        return results.map(function (result, i) { return draw(charts[i], result); });
      });
    }).then(function (counts) {
      var any = counts.some(function (n) { return n > 0; });
      root.classList.add("has-data");
      status.textContent = any ? "" : "No samples yet: Prometheus scrapes every 10 s.";
    }).catch(function (err) {
      access = null;
      root.classList.remove("has-data");
      status.textContent = "metrics unavailable: " + (err.message || String(err));
    });
  }

  function start() {
    var root = document.getElementById("cluster-metrics");
    if (!root || started) return;
    started = true;
    refresh(root);
    setInterval(function () { refresh(root); }, REFRESH);
  }

  document.addEventListener("DOMContentLoaded", function () {
    var present = !!document.getElementById("cluster-metrics");
    start();
    // Metrics became available while the page was open (the head got ready): load the
    // page again once, so its policy lets the browser reach the new gateway.
    document.body.addEventListener("htmx:afterSettle", function () {
      if (!present && document.getElementById("cluster-metrics")) window.location.reload();
    });
  });
})();
