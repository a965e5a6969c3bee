// Draws the overview's spend-per-key chart from the JSON the page embeds (#key-chart-data).
// Chart.js is served locally; the page's CSP allows no inline script.
(function () {
  "use strict";
  var source = document.getElementById("key-chart-data");
  var canvas = document.getElementById("chart-key-spend");
  if (!source || !canvas || typeof Chart === "undefined" || !window.SirayaCharts) { return; }
  var data = JSON.parse(source.textContent);
  var usd = window.SirayaCharts.usd;  // charts.js: the shared defaults and formats

  var datasets = data.series.map(function (series) {
    return {
      label: series.label, data: series.spend, borderColor: series.colour, backgroundColor: series.colour + "55",
      fill: true, stack: "keys", pointRadius: 2, tension: 0.2
    };
  });
  new Chart(canvas, {
    type: "line",
    data: {labels: data.days, datasets: datasets},
    options: {
      interaction: {mode: "index", intersect: false},
      scales: {y: {stacked: true, beginAtZero: true, ticks: {callback: usd}}},
      plugins: {
        legend: {position: "bottom"},
        tooltip: {callbacks: {label: function (item) { return item.dataset.label + ": " + usd(item.parsed.y); }}}
      }
    }
  });
  document.body.dataset.chartsReady = "true";
})();
