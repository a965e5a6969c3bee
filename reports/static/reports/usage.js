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
  if (!source || typeof Chart === "undefined") { return; }
  var data = JSON.parse(source.textContent);
  var palette = ["#2563eb", "#f97316", "#16a34a", "#dc2626", "#9333ea", "#0891b2", "#ca8a04", "#db2777", "#4b5563", "#65a30d"];
  var statusColors = {"In progress": "#94a3b8", "Completed": "#16a34a", "Cancelled": "#f59e0b", "Error": "#dc2626", "Interrupted": "#7c3aed"};
  Chart.defaults.animation = false;  // draw at once: screenshots and tests see the final chart
  Chart.defaults.maintainAspectRatio = false;

  function stacked(canvasId, series, label) {
    var datasets = data.models.map(function (model, i) {
      return {label: model, data: series[model], backgroundColor: palette[i % palette.length], stack: "models"};
    });
    return new Chart(document.getElementById(canvasId), {
      type: "bar",
      data: {labels: data.days, datasets: datasets},
      options: {
        scales: {x: {stacked: true}, y: {stacked: true, beginAtZero: true, title: {display: true, text: label}}},
        plugins: {legend: {position: "bottom"}}
      }
    });
  }

  stacked("chart-cost", data.cost, "USD");
  stacked("chart-tokens", data.tokens, "tokens");
  new Chart(document.getElementById("chart-status"), {
    type: "bar",
    data: {
      labels: data.status.labels,
      datasets: [{
        label: "requests",
        data: data.status.counts,
        backgroundColor: data.status.labels.map(function (l) { return statusColors[l] || "#64748b"; })
      }]
    },
    options: {indexAxis: "y", scales: {x: {beginAtZero: true, ticks: {precision: 0}}}, plugins: {legend: {display: false}}}
  });
  document.body.dataset.chartsReady = "true";
})();
