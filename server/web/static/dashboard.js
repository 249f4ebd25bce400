// The dashboard's monthly trend charts.
"use strict";

(() => {
  const data = JSON.parse(document.getElementById("trend-data").textContent);
  const xs = data.months.map((m) => Date.UTC(Number(m.slice(0, 4)), Number(m.slice(5, 7)) - 1, 1) / 1000);
  // In the page's language (fl.number, fl.percent); the units stay as they are.
  const formats = {
    rate: (v) => (v == null ? "—" : fl.percent(v)),
    hours: (v) => (v == null ? "—" : fl.number(v) + " h"),
    seconds: (v) => (v == null ? "—" : fl.number(v) + " s"),
    money: (v) => (v == null ? "—" : fl.number(v)),
    count: (v) => (v == null ? "—" : fl.number(v)),
  };
  for (const figure of document.querySelectorAll("#trend-charts .chart, #call-charts .chart")) {
    const name = figure.dataset.series;
    const kind = data.kinds[name];
    const format = formats[kind] || formats.count;
    const ys = data.series[name];
    figure.dataset.points = String(ys.filter((v) => v != null).length);
    // A month the figures cover only in part (the current one) is drawn apart: a hollow point
    // on a dashed line, so a trend does not end in a cliff that is only the calendar.
    const partial = data.coverage.map((c) => c < 1);
    const whole = ys.map((v, i) => (partial[i] ? null : v));
    const part = ys.map((v, i) => (partial[i] || partial[i - 1] || partial[i + 1] ? v : null));
    figure.dataset.partial = String(partial.filter(Boolean).length);
    // The figure's caption, as the page words it in the reader's language.
    const caption = figure.querySelector("figcaption")?.firstChild?.textContent.trim();
    const label = caption || data.labels[name];
    flCharts.draw(figure.querySelector(".plot"), [xs, whole, part], [
      { label, stroke: "#1f5fbf", width: 2, fill: "rgba(31, 95, 191, 0.08)", value: (u, v) => format(v), points: { show: true } },
      { label: fl.t("partial month"), stroke: "#1f5fbf", width: 1.5, dash: [5, 5], value: (u, v) => format(v), points: { show: true, fill: "#fff" } },
    ], { yValues: (u, values) => values.map(format) });
  }
})();
