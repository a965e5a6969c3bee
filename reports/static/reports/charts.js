// What every report chart shares: Chart.js defaults that follow the page's colour scheme, and the
// pages' number formats (lib/numbers.py). Loaded after Chart.js and before each page's own script.
(function () {
  "use strict";
  if (typeof Chart === "undefined") { return; }
  // Text and grid lines follow the page's colour scheme (usage.css sets the variables, dark mode too).
  var style = getComputedStyle(document.documentElement);
  Chart.defaults.color = style.getPropertyValue("--muted").trim() || "#6b7280";
  Chart.defaults.borderColor = style.getPropertyValue("--line").trim() || "#e5e7eb";
  Chart.defaults.animation = false;  // draw at once: screenshots and tests see the final chart
  Chart.defaults.maintainAspectRatio = false;

  // Counts with separators; USD with a $ sign, two decimals from $1, four significant digits below.
  var counts = new Intl.NumberFormat("en-US", {maximumFractionDigits: 0});
  function usd(value) {
    var magnitude = Math.abs(value);
    if (magnitude === 0) { return "$0.00"; }
    if (magnitude < 0.0001) { return value < 0 ? ">-$0.0001" : "<$0.0001"; }
    var digits = magnitude >= 0.995 ? {minimumFractionDigits: 2, maximumFractionDigits: 2}
      : {minimumFractionDigits: 2, maximumSignificantDigits: 4};
    return (value < 0 ? "-$" : "$") + new Intl.NumberFormat("en-US", digits).format(magnitude);
  }

  window.SirayaCharts = {counts: counts, usd: usd};
})();
