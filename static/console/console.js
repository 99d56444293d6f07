// Raydeck console behaviour. The CSP allows no inline script but the files of static/ that
// kit/inline_assets.py puts inside each page (this one among them), so everything lives here.
(function () {
  "use strict";

  // Selects marked data-autosubmit submit their form on change; their button hides.
  document.addEventListener("change", function (event) {
    var el = event.target;
    if (el instanceof HTMLSelectElement && el.hasAttribute("data-autosubmit") && el.form) {
      el.form.requestSubmit();
    }
  });
  document.documentElement.classList.add("js");

  // Copy buttons: <button data-copy="#element-id">.
  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-copy]");
    if (!button) return;
    var source = document.querySelector(button.getAttribute("data-copy"));
    if (!source || !navigator.clipboard) return;
    navigator.clipboard.writeText(source.textContent.trim()).then(function () {
      var label = button.textContent;
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = label; }, 1500);
    });
  });

  // A page of a stored log: <pre data-log-url data-log-headers='{"Range": ...}'> reads its
  // byte range straight from the cloud's storage (a signed URL), never the whole log.
  document.querySelectorAll("pre[data-log-url]").forEach(function (pre) {
    var headers = JSON.parse(pre.getAttribute("data-log-headers") || "{}");
    fetch(pre.getAttribute("data-log-url"), { headers: headers, credentials: "omit" })
      .then(function (response) {
        if (!response.ok) throw new Error("the storage answered " + response.status);
        return response.text();
      })
      .then(function (text) { pre.textContent = text; })
      .catch(function (error) {
        pre.textContent = "Could not read this page of the log (" + error.message + "). " +
          "Reload the page for a fresh link, or download the whole log.";
      });
  });

  // The chart library (uPlot, static/vendor/uplot), fetched when a page first draws a
  // chart rather than with the page: most pages draw none, and a cluster without metrics
  // neither. `root` carries its URLs (templates/console/_chart_library.html). Resolves
  // to uPlot; a failed load may be tried again by the next refresh.
  var chartLibrary = null;
  window.raydeckCharts = function (root) {
    if (!chartLibrary) {
      chartLibrary = new Promise(function (resolve, reject) {
        var style = document.createElement("link");
        style.rel = "stylesheet";
        style.href = root.getAttribute("data-chart-style");
        document.head.appendChild(style);
        var script = document.createElement("script");
        script.src = root.getAttribute("data-chart-script");
        script.onload = function () { resolve(window.uPlot); };
        script.onerror = function () {
          chartLibrary = null;
          reject(new Error("the chart library did not load"));
        };
        document.head.appendChild(script);
      });
    }
    return chartLibrary;
  };

  // Close open menus when clicking elsewhere.
  document.addEventListener("click", function (event) {
    document.querySelectorAll("details.menu[open]").forEach(function (menu) {
      if (!menu.contains(event.target)) menu.removeAttribute("open");
    });
  });
})();
