// Small uPlot charts that follow their container's width.
"use strict";

const flCharts = (() => {
  const plots = new Map();

  function widthOf(el) {
    return Math.max(220, Math.floor(el.getBoundingClientRect().width || el.parentElement.clientWidth || 320));
  }

  // Dates on the axes and in the legend in the page's language: its month and day names, a
  // 24-hour clock and its day-month order (uPlot's own are English: "Dec", "3pm", "12/6").
  const DAY_MONTH = { de: "{D}.{M}.", fr: "{DD}/{MM}" };
  function names(kind) {
    const format = new Intl.DateTimeFormat(fl.lang, { [kind === "month" ? "month" : "weekday"]: "short", timeZone: "UTC" });
    const long = new Intl.DateTimeFormat(fl.lang, { [kind === "month" ? "month" : "weekday"]: "long", timeZone: "UTC" });
    // 2023-01-01 is a Sunday: days 1-7 are Sunday to Saturday, months 0-11 January to December.
    const dates = kind === "month" ? [...Array(12).keys()].map((m) => new Date(Date.UTC(2023, m, 1))) : [...Array(7).keys()].map((d) => new Date(Date.UTC(2023, 0, 1 + d)));
    return [dates.map((d) => long.format(d)), dates.map((d) => format.format(d))];
  }
  let fmtDate;
  if (fl.lang !== "en") {
    const [MMMM, MMM] = names("month");
    const [WWWW, WWW] = names("weekday");
    const dayMonth = DAY_MONTH[fl.lang] || "{M}/{D}";
    fmtDate = (template) =>
      uPlot.fmtDate(
        template
          .replace("{M}/{D}/{YY}", "{YYYY}-{MM}-{DD}")
          .replace("{M}/{D}", dayMonth)
          .replace("{h}:{mm}{aa}", "{HH}:{mm}")
          .replace("{h}{aa}", "{HH}:00"),
        { MMMM, MMM, WWWW, WWW },
      );
  }

  // Draws (or redraws) a chart into el: data = [xs (unix seconds), ...ys].
  function draw(el, data, series, { height = 180, yValues, time = true } = {}) {
    plots.get(el)?.destroy();
    el.textContent = "";
    const plot = new uPlot(
      {
        width: widthOf(el),
        height,
        scales: { x: { time } },
        series: [{ label: time ? fl.t("Time") : fl.t("Value") }, ...series],
        ...(fmtDate ? { fmtDate } : {}),
        axes: [{ stroke: "#4a5563", grid: { stroke: "#e6e9ee" } }, { stroke: "#4a5563", size: 60, grid: { stroke: "#e6e9ee" }, values: yValues }],
        legend: { live: true },
        cursor: { drag: { x: false, y: false } },
      },
      data,
      el,
    );
    plots.set(el, plot);
    return plot;
  }

  let pending;
  window.addEventListener("resize", () => {
    clearTimeout(pending);
    pending = setTimeout(() => {
      for (const [el, plot] of plots) plot.setSize({ width: widthOf(el), height: plot.height });
    }, 100);
  });

  return { draw };
})();
