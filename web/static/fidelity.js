// The weekly homework-rate chart (Chart.js, vendored): rates only, never quotes.
(function () {
  "use strict";
  const canvas = document.getElementById("trend");
  if (!canvas || typeof Chart === "undefined") return;
  const COLORS = ["#1f6feb", "#d1495b", "#2a9d8f", "#e9a23b", "#6c5ce7", "#8d6e63", "#00838f", "#c2185b"];

  fetch(canvas.dataset.src, {credentials: "same-origin"})
    .then((r) => { if (r.status === 401) { window.location = "/login"; } return r.json(); })
    .then((data) => {
      const datasets = data.series.map((s, i) => ({
        label: s.label,
        data: s.rates.map((v) => (v === null ? null : Math.round(v * 1000) / 10)),
        borderColor: COLORS[i % COLORS.length],
        backgroundColor: COLORS[i % COLORS.length],
        borderWidth: s.overall ? 3 : 1.5,
        borderDash: s.overall ? [] : [4, 3],
        spanGaps: true,
        tension: 0.2,
      }));
      new Chart(canvas, {
        type: "line",
        data: {labels: data.weeks, datasets: datasets},
        options: {
          animation: false,
          maintainAspectRatio: false,
          scales: {y: {min: 0, max: 100, title: {display: true, text: "sessions with homework (%)"}}},
          plugins: {legend: {position: "bottom"}},
        },
      });
      canvas.dataset.rendered = "true";
    });
})();
