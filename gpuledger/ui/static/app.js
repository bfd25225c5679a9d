// gpuledger dashboard: redraws the page's figures from its own JSON endpoint (same origin), and its chart.
(function () {
  "use strict";
  const main = document.getElementById("page");
  if (!main) return;
  const api = main.dataset.api;
  const every = Number(main.dataset.refreshMs) || 5000;
  let chart = null;

  function money(v) { return v == null ? "" : v.toLocaleString("en-US", {minimumFractionDigits: 2, maximumFractionDigits: 2}); }

  function drawJevons(data) {
    const box = document.getElementById("chart-jevons");
    if (!box || !data) return;
    const rows = [data.x, data.spend, data.per_mtok];
    if (chart) { chart.setData(rows); return; }
    const width = Math.max(280, box.clientWidth);
    chart = new uPlot({
      width: width, height: 260,
      scales: {x: {time: true}, spend: {range: (u, lo, hi) => [0, (hi || 1) * 1.1]}, unit: {range: (u, lo, hi) => [0, (hi || 1) * 1.25]}},
      series: [
        {},
        {label: "total spend", scale: "spend", stroke: "#2563eb", fill: "rgba(37, 99, 235, 0.35)", width: 1,
         paths: uPlot.paths.bars({size: [0.6, 40]}), points: {show: false}, value: (u, v) => money(v)},
        {label: "per 1M tokens", scale: "unit", stroke: "#dc2626", width: 2, dash: [6, 4], points: {size: 8}, value: (u, v) => money(v)},
      ],
      axes: [{}, {scale: "spend", label: "spend"}, {scale: "unit", side: 1, label: "per 1M tokens", grid: {show: false}}],
    }, rows, box);
    window.addEventListener("resize", () => chart.setSize({width: Math.max(280, box.clientWidth), height: 260}));
  }

  async function refresh() {
    try {
      const response = await fetch(api, {credentials: "same-origin", headers: {"Accept": "application/json"}});
      if (!response.ok) return;
      const body = await response.json();
      for (const [name, html] of Object.entries(body.tables)) {
        const holder = document.querySelector(`[data-table="${name}"]`);
        if (holder && holder.innerHTML !== html) holder.innerHTML = html;
      }
      if (body.charts) drawJevons(body.charts.jevons);
      document.getElementById("updated").textContent = new Date(body.generated_at).toLocaleTimeString();
    } catch (err) {
      document.getElementById("updated").textContent = "(refresh failed, retrying)";
    }
  }

  // the server rendered the figures just now: draw its chart data, then re-read only on the interval
  const box = document.getElementById("chart-jevons");
  if (box && box.dataset.chart) drawJevons(JSON.parse(box.dataset.chart));
  setInterval(refresh, every);
})();
