// The filter controls: start and end count only for a custom range, so they are editable only then
// (disabled inputs are not submitted; the server ignores them for the other ranges too).
(function () {
  "use strict";
  var range = document.getElementById("id_range");
  var dates = [document.getElementById("id_start"), document.getElementById("id_end")];
  if (!range) { return; }
  function update() {
    var custom = range.value === "custom";
    dates.forEach(function (input) { if (input) { input.disabled = !custom; } });
  }
  range.addEventListener("change", update);
  update();
  document.body.dataset.controlsReady = "true";
})();

// Draws the usage charts from the JSON the page embeds (#chart-data). Chart.js is served locally.
(function () {
  "use strict";
  var source = document.getElementById("chart-data");
  if (!source || typeof Chart === "undefined" || !window.SirayaCharts) { return; }
  var data = JSON.parse(source.textContent);
  var counts = window.SirayaCharts.counts, usd = window.SirayaCharts.usd;  // charts.js: defaults and formats

  function stacked(canvasId, series, format) {
    var canvas = document.getElementById(canvasId);
    if (!canvas) { return; }  // the page shows "No data for this range" instead
    var datasets = data.models.map(function (model) {
      return {label: model, data: series[model], backgroundColor: data.colours[model], stack: "models"};
    });
    new Chart(canvas, {
      type: "bar",
      data: {labels: data.days, datasets: datasets},
      options: {
        scales: {x: {stacked: true}, y: {stacked: true, beginAtZero: true, ticks: {callback: format}}},
        plugins: {
          legend: {position: "bottom"},
          tooltip: {callbacks: {label: function (item) { return item.dataset.label + ": " + format(item.parsed.y); }}}
        }
      }
    });
  }

  stacked("chart-cost", data.cost, usd);
  stacked("chart-tokens", data.tokens, function (value) { return counts.format(value); });
  function requestsBy(canvasId, part) {
    var canvas = document.getElementById(canvasId);
    if (!canvas) { return; }
    new Chart(canvas, {
      type: "bar",
      data: {
        labels: part.labels,
        datasets: [{label: "requests", data: part.counts, backgroundColor: part.colours}]
      },
      options: {
        indexAxis: "y",
        scales: {x: {beginAtZero: true, ticks: {precision: 0, callback: function (value) { return counts.format(value); }}}},
        plugins: {legend: {display: false}}
      }
    });
  }

  requestsBy("chart-status", data.status);
  requestsBy("chart-api", data.apis);
  document.body.dataset.chartsReady = "true";
})();

// Auto-refresh: the interval the page was opened with (the "refresh" parameter of its URL, which the
// filter form keeps) reloads the page with the same query string. Changing the control takes effect on Apply;
// editing any filter stops the reload, so it cannot throw away what the operator is typing.
(function () {
  "use strict";
  var seconds = parseInt(new URLSearchParams(window.location.search).get("refresh"), 10);
  var form = document.getElementById("filters");
  if (!(seconds >= 30) || !document.getElementById("totals")) { return; }  // off, or no report to refresh
  document.body.dataset.refreshSeconds = String(seconds);
  var timer = window.setTimeout(function () { window.location.replace(window.location.href); }, seconds * 1000);
  function pause() {
    window.clearTimeout(timer);
    document.body.dataset.refreshSeconds = "paused";
  }
  if (form) { form.addEventListener("input", pause); form.addEventListener("change", pause); }
})();
