// The dashboard's monthly trend charts.
"use strict";

(() => {
  const data = JSON.parse(document.getElementById("trend-data").textContent);
  const xs = data.months.map((m) => Date.UTC(Number(m.slice(0, 4)), Number(m.slice(5, 7)) - 1, 1) / 1000);
  const formats = {
    rate: (v) => (v == null ? "—" : (v * 100).toFixed(0) + " %"),
    hours: (v) => (v == null ? "—" : Math.round(v).toLocaleString("en") + " h"),
    money: (v) => (v == null ? "—" : Math.round(v).toLocaleString("en")),
    count: (v) => (v == null ? "—" : Math.round(v).toLocaleString("en")),
  };
  for (const figure of document.querySelectorAll("#trend-charts .chart")) {
    const name = figure.dataset.series;
    const kind = data.kinds[name];
    const format = formats[kind] || formats.count;
    const ys = data.series[name];
    figure.dataset.points = String(ys.filter((v) => v != null).length);
    flCharts.draw(figure.querySelector(".plot"), [xs, ys], [
      { label: data.labels[name], stroke: "#1f5fbf", width: 2, fill: "rgba(31, 95, 191, 0.08)", value: (u, v) => format(v), points: { show: true } },
    ], { yValues: (u, values) => values.map(format) });
  }
})();
