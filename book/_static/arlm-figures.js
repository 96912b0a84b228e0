/* Draws the book's plotly figures: those in view at once, then the rest, one task each.
 *
 * arlm_lib.display.figure_html writes each figure as an empty, sized <div class="plotly-graph-div">
 * followed by <script type="application/json" class="arlm-figure-spec" data-figure="DIV ID">, the
 * figure's data, layout and config. Drawing one costs 30-250 ms of main-thread time. Drawing them all
 * while the page was still being parsed kept the text and the first figure off the screen for seconds
 * on a chapter with ten figures (bench/page_weight.py), so this script is deferred (after plotly.js,
 * which is deferred too) and draws:
 *   1. the figures in the viewport, at once, before MathJax typesets the page;
 *   2. any other figure as soon as it comes within a screen of the viewport;
 *   3. the rest in page order, one per task, so that the browser can paint, typeset and answer the
 *      reader between two figures (waiting for idle periods instead left the last figure of a chapter
 *      about 0.5 s later, bench/page_weight.py); and all remaining ones before printing.
 * A figure's box has its final size before it is drawn, so drawing never moves the text.
 */
(function () {
  "use strict";

  const pending = new Map(); // figure div -> its JSON spec element, until drawn
  for (const spec of document.querySelectorAll('script[type="application/json"].arlm-figure-spec')) {
    const div = document.getElementById(spec.dataset.figure);
    if (div) pending.set(div, spec);
  }
  if (pending.size === 0) return;

  if (typeof window.Plotly === "undefined") {
    // A blank box would look like a figure with no data: say what is wrong instead.
    for (const div of pending.keys()) {
      div.textContent = "This figure needs plotly.js, which did not load (see the browser console).";
    }
    throw new Error("arlm-figures.js: plotly.js is not loaded, so " + pending.size + " figures are not drawn");
  }

  let observer = null;

  function draw(div) {
    const spec = pending.get(div);
    if (spec === undefined) return;
    pending.delete(div);
    if (observer) observer.unobserve(div);
    const figure = JSON.parse(spec.textContent);
    window.Plotly.newPlot(div, figure.data, figure.layout, figure.config);
  }

  function drawAll() {
    for (const div of Array.from(pending.keys())) draw(div);
  }

  function inViewport(div) {
    const box = div.getBoundingClientRect();
    return box.width > 0 && box.bottom > 0 && box.top < window.innerHeight;
  }

  // 1. In view now.
  for (const div of Array.from(pending.keys())) {
    if (inViewport(div)) draw(div);
  }

  // 2. Coming into view (a link to an anchor further down, or a scroll faster than the idle queue).
  if ("IntersectionObserver" in window) {
    observer = new IntersectionObserver(
      (entries) => entries.forEach((entry) => entry.isIntersecting && draw(entry.target)),
      { rootMargin: "100% 0px" }
    );
    pending.forEach((spec, div) => observer.observe(div));
  }

  // 3. The rest, in page order, one per task.
  function drawNext() {
    const next = pending.keys().next();
    if (next.done) return;
    draw(next.value);
    window.setTimeout(drawNext, 0);
  }
  window.setTimeout(drawNext, 0);
  window.addEventListener("beforeprint", drawAll);
})();
