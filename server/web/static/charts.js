// Small uPlot charts that follow their container's width.
"use strict";

const flCharts = (() => {
  const plots = new Map();

  function widthOf(el) {
    return Math.max(220, Math.floor(el.getBoundingClientRect().width || el.parentElement.clientWidth || 320));
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
        series: [{}, ...series],
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
