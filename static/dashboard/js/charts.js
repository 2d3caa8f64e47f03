// Draws every Plotly figure of a page: <div data-figure="id"> takes the JSON of the
// <script type="application/json" id="id"> that the server rendered (charts.figure_script).
// No inline script anywhere, so a strict Content-Security-Policy holds.
window.drawFigures = function drawFigures(root) {
  (root || document).querySelectorAll("[data-figure]").forEach((el) => {
    const source = document.getElementById(el.dataset.figure);
    if (!source || !window.Plotly) return;
    const figure = JSON.parse(source.textContent);
    const config = { responsive: true, displaylogo: false, modeBarButtonsToRemove: ["lasso2d", "select2d"] };
    window.Plotly.newPlot(el, figure.data, figure.layout, config);
  });
};

document.addEventListener("DOMContentLoaded", () => window.drawFigures());
