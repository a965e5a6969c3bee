// Draws the overview's spend-per-key chart from the JSON the page embeds (#key-chart-data).
// Chart.js is served locally; the page's CSP allows no inline script.
(function () {
  "use strict";
  var source = document.getElementById("key-chart-data");
  var canvas = document.getElementById("chart-key-spend");
  if (!source || !canvas || typeof Chart === "undefined") { return; }
  var data = JSON.parse(source.textContent);
  var style = getComputedStyle(document.documentElement);
  Chart.defaults.color = style.getPropertyValue("--muted").trim() || "#6b7280";
  Chart.defaults.borderColor = style.getPropertyValue("--line").trim() || "#e5e7eb";
  Chart.defaults.animation = false;  // draw at once: screenshots and tests see the final chart
  Chart.defaults.maintainAspectRatio = false;

  // The pages' money format (lib/numbers.py): USD with a $ sign.
  function usd(value) {
    var magnitude = Math.abs(value);
    if (magnitude === 0) { return "$0.00"; }
    if (magnitude < 0.0001) { return value < 0 ? ">-$0.0001" : "<$0.0001"; }
    var digits = magnitude >= 0.995 ? {minimumFractionDigits: 2, maximumFractionDigits: 2}
      : {minimumFractionDigits: 2, maximumSignificantDigits: 4};
    return (value < 0 ? "-$" : "$") + new Intl.NumberFormat("en-US", digits).format(magnitude);
  }

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
