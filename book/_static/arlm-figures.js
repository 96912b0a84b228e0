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
 *
 * Four things plotly does not do for every reader:
 *   - a figure keeps the width it was laid out for, so on a phone it scrolls sideways inside its output
 *     box: a line above it says so while it does;
 *   - on a touch screen, dragging a figure zooms it, so a thumb on a tall heatmap cannot scroll the page:
 *     there the figure is drawn with dragging off (tapping still shows the values);
 *   - its menus and sliders are SVG drawings that the keyboard cannot reach: each figure with menus or
 *     sliders gets native <select> and range controls that do the same, hidden until they have focus;
 *   - its values (an attention weight, a token's probability) show only when a mouse hovers: a figure
 *     takes the keyboard focus, and the arrow keys move plotly's own hover label from point to point
 *     (left/right along a curve or a heatmap row, up/down through heatmap rows and on to the next
 *     curve or panel, Home/End,
 *     PageUp/PageDown by a tenth of a long curve, Escape), which a screen reader hears through a live
 *     region.
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

  // 0. A figure keeps the width it was laid out for (arlm.css), so on a phone its output box scrolls
  // sideways. Nothing showed that there was more to the right: a cue says so while the box overflows.
  if ("ResizeObserver" in window) {
    // Toggled in the next frame: showing the cue changes the observed box's height, and doing that
    // inside the observer's callback is a "ResizeObserver loop" error.
    const overflowing = new ResizeObserver((entries) =>
      window.requestAnimationFrame(() =>
        entries.forEach((entry) => {
          const box = entry.target;
          box.querySelector(":scope > .arlm-scroll-hint").hidden = box.scrollWidth <= box.clientWidth + 1;
        })
      )
    );
    const scrollers = new Set();
    for (const div of pending.keys()) {
      const scroller = div.closest("div.output");
      if (scroller) scrollers.add(scroller);
    }
    scrollers.forEach((scroller) => {
      const hint = document.createElement("div");
      hint.className = "arlm-scroll-hint";
      hint.hidden = true;
      hint.textContent = "Wider than the screen: scroll sideways to see all of the figure \u2192";
      scroller.prepend(hint);
      overflowing.observe(scroller);
    });
  }

  let observer = null;

  function draw(div) {
    const spec = pending.get(div);
    if (spec === undefined) return;
    pending.delete(div);
    if (observer) observer.unobserve(div);
    const figure = JSON.parse(spec.textContent);
    if (coarsePointer) figure.layout.dragmode = false;
    window.Plotly.newPlot(div, figure.data, figure.layout, figure.config).then(() => describe(div));
  }

  const coarsePointer = window.matchMedia && window.matchMedia("(pointer: coarse)").matches;

  function plain(markup) {
    const text = String(markup == null ? "" : markup).replace(/<br\s*\/?>/gi, " ").replace(/<[^>]+>/g, "");
    const decode = document.createElement("textarea");
    decode.innerHTML = text;
    return decode.value.replace(/\s+/g, " ").trim();
  }

  // One name for the picture (the figure box carries the title, from arlm_lib.display.figure_html), and
  // keyboard controls for its menus and sliders.
  function describe(div) {
    const box = div.closest(".arlm-figure") || div;
    const title = box.getAttribute("aria-label") || "figure";
    div.querySelectorAll("svg.main-svg").forEach((svg, i) => {
      if (i === 0) {
        svg.setAttribute("role", "img");
        svg.setAttribute("aria-label", title);
      } else {
        svg.setAttribute("aria-hidden", "true"); // tick labels and hover layers, not content
      }
    });
    readByKeyboard(div, box, title);
    const menus = div.layout.updatemenus || [];
    const sliders = div.layout.sliders || [];
    if (menus.length === 0 && sliders.length === 0) return;
    const bar = document.createElement("div");
    bar.className = "arlm-figure-controls";
    bar.setAttribute("role", "group");
    bar.setAttribute("aria-label", "Controls of the figure: " + title);
    const apply = (method, args) =>
      method && method !== "skip" ? window.Plotly[method](div, ...(args || [])) : Promise.resolve();
    const selects = menus.map((menu, m) => {
      const select = document.createElement("select");
      (menu.buttons || []).forEach((button, i) => select.add(new Option(plain(button.label), String(i))));
      select.value = String(menu.active == null ? 0 : menu.active);
      select.addEventListener("change", () => {
        const i = Number(select.value);
        const button = div.layout.updatemenus[m].buttons[i];
        apply(button.method, button.args).then(() =>
          window.Plotly.relayout(div, { ["updatemenus[" + m + "].active"]: i })
        );
      });
      bar.appendChild(labelled(menu.name ? plain(menu.name) : "menu " + (m + 1), select));
      return select;
    });
    const ranges = sliders.map((slider, k) => {
      const steps = slider.steps || [];
      const prefix = plain(slider.currentvalue && slider.currentvalue.prefix) || "value: ";
      const input = document.createElement("input");
      input.type = "range";
      input.min = "0";
      input.max = String(Math.max(0, steps.length - 1));
      input.step = "1";
      input.value = String(slider.active || 0);
      const say = () => input.setAttribute("aria-valuetext", prefix + plain(steps[Number(input.value)].label));
      say();
      input.addEventListener("input", () => {
        const i = Number(input.value);
        const step = div.layout.sliders[k].steps[i];
        say();
        apply(step.method, step.args).then(() =>
          window.Plotly.relayout(div, { ["sliders[" + k + "].active"]: i })
        );
      });
      bar.appendChild(labelled(prefix.replace(/[:\s]+$/, "") || "slider " + (k + 1), input));
      return input;
    });
    // Mouse and keyboard stay in step.
    div.on("plotly_buttonclicked", (event) => {
      const select = selects[event.menu._index];
      if (select) select.value = String(event.active);
    });
    div.on("plotly_sliderchange", (event) => {
      const input = ranges[event.slider._index];
      if (input) input.value = String(event.step._index);
    });
    box.parentNode.insertBefore(bar, box);
  }

  // The traces a reader can hover now: shown (a menu may have hidden some) and answering a hover. Read
  // from plotly's own processed copy of the figure: the figure's arrays may be base64-encoded.
  function hoverableTraces(div) {
    return (div._fullData || [])
      .filter((t) => t.visible === true && t.hoverinfo !== "skip" && t.hoverinfo !== "none")
      .map((t) => t.index)
      .filter((index) => extent(div, index).rows > 0);
  }

  // A trace's processed data, and its points: a heatmap's rows and the cells of each row, another
  // trace's points in one row.
  function extent(div, index) {
    const trace = div._fullData.find((t) => t.index === index);
    if (trace.type === "heatmap") {
      const computed = (div.calcdata || []).find((cd) => cd[0] && cd[0].trace.index === index);
      const z = (computed && computed[0].z) || [];
      return { trace, rows: z.length, cells: (row) => (z[row] || []).length };
    }
    const n = trace._length || (trace.y || trace.x || []).length || 0;
    return { trace, rows: n > 0 ? 1 : 0, cells: () => n };
  }

  function readByKeyboard(div, box, title) {
    if (hoverableTraces(div).length === 0) return;
    // The plot itself takes the focus. role="application" makes a screen reader in browse mode pass
    // the arrow keys through to it (on a plain figure it would move its reading cursor instead).
    div.tabIndex = 0;
    div.setAttribute("role", "application");
    div.setAttribute("aria-roledescription", "interactive figure");
    div.setAttribute("aria-label", title + ". Arrow keys read its values.");
    const readout = document.createElement("div");
    readout.className = "arlm-figure-readout";
    readout.setAttribute("aria-live", "polite");
    box.after(readout);
    const at = { trace: 0, row: 0, point: -1 }; // point -1: nothing read yet
    let readLater = null;
    const forget = () => {
      window.clearTimeout(readLater);
      window.Plotly.Fx.unhover(div);
      readout.textContent = "";
      delete readout.dataset.pending;
    };
    div.addEventListener("blur", forget); // no keyboard label left behind when the focus moves on
    div.addEventListener("keydown", (event) => {
      if (event.target !== div) return; // a key meant for a control inside the figure
      if (event.altKey || event.ctrlKey || event.metaKey || event.shiftKey) return; // browser shortcuts
      const traces = hoverableTraces(div);
      if (traces.length === 0) return;
      if (event.key === "Escape") {
        forget();
        return;
      }
      at.trace = Math.min(at.trace, traces.length - 1);
      let shape = extent(div, traces[at.trace]);
      const length = () => shape.cells(at.row);
      if (event.key === "ArrowRight") at.point += 1;
      else if (event.key === "ArrowLeft") at.point -= 1;
      else if (event.key === "Home") at.point = 0;
      else if (event.key === "End") at.point = length() - 1;
      else if (event.key === "PageDown") at.point += Math.max(1, Math.round(length() / 10));
      else if (event.key === "PageUp") at.point -= Math.max(1, Math.round(length() / 10));
      else if (event.key === "ArrowDown" || event.key === "ArrowUp") {
        // The next row of a heatmap; past its last (or first) row, the next (previous) curve or panel.
        const step = event.key === "ArrowDown" ? 1 : -1;
        const row = at.row + step;
        if (row >= 0 && row < shape.rows) at.row = row;
        else {
          at.trace = (at.trace + step + traces.length) % traces.length;
          shape = extent(div, traces[at.trace]);
          at.row = step > 0 ? 0 : shape.rows - 1;
        }
      } else return;
      event.preventDefault(); // the arrows move the reading, not the page
      at.row = Math.max(0, Math.min(shape.rows - 1, at.row));
      at.point = Math.max(0, Math.min(length() - 1, at.point));
      const trace = shape.trace;
      const isHeatmap = trace.type === "heatmap";
      const subplot = (trace.xaxis || "x") + (trace.yaxis || "y");
      // A heatmap cell is found by its position (plotly finds no heatmap cell by pointNumber).
      const point = isHeatmap
        ? { xval: position(trace, "x", at.point), yval: position(trace, "y", at.row) }
        : { pointNumber: at.point };
      window.Plotly.Fx.unhover(div); // a point plotly draws no label for must not read the last one
      window.Plotly.Fx.hover(div, [{ curveNumber: traces[at.trace], ...point }], subplot);
      // plotly draws a hover at most every 50 ms and defers one that comes sooner; read it after that.
      readout.dataset.pending = "1";
      window.clearTimeout(readLater);
      readLater = window.setTimeout(() => {
        readout.textContent = hoverText(div) || "no value at this point";
        delete readout.dataset.pending;
      }, 60);
    });
  }

  // Where the i-th cell of a heatmap sits on an axis: categories sit at 0, 1, 2...; numbers at
  // themselves; without coordinates, at x0 + i * dx.
  function position(trace, axis, i) {
    const values = trace[axis];
    if (values && values.length) return typeof values[i] === "number" ? values[i] : i;
    return (trace[axis + "0"] || 0) + i * (trace["d" + axis] || 1);
  }

  // What the hover label says, one part per line of it ("query: c; key: a; weight: 0.31").
  function hoverText(div) {
    const parts = [];
    div.querySelectorAll(".hoverlayer text").forEach((text) => {
      const lines = text.querySelectorAll("tspan.line");
      (lines.length ? Array.from(lines) : [text]).forEach((line) => parts.push(plain(line.textContent)));
    });
    return parts.filter(Boolean).join("; ");
  }

  function labelled(text, control) {
    const label = document.createElement("label");
    label.textContent = text + " ";
    label.appendChild(control);
    return label;
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
