/* Two accessibility repairs on every page of the book, each found by axe-core (tests/test_browser.py
 * runs it on every page at a desktop and a phone width):
 *
 *   - A display formula wider than the text column scrolls sideways, but the book takes MathJax's
 *     formulas out of the tab order (over a hundred per chapter, see _config.yml), so a keyboard reader
 *     could not scroll one. A notebook output box (a wide table on a phone) scrolls the same way. The
 *     theme makes scrolling code blocks and tables tab stops, but neither of these. Each one that
 *     overflows now, and again after a resize, and holds nothing focusable, becomes a named tab stop;
 *     the others stay out of the tab order.
 *   - The theme's primary sidebar (the book's title, the search button and the chapter list) is a plain
 *     <div>, so the title and the search button sat outside every landmark: a screen reader's landmark
 *     list skipped them. The sidebar is named as a complementary landmark; the chapter list inside it
 *     stays the "Main" navigation landmark.
 */
(function () {
  "use strict";

  const sidebar = document.getElementById("pst-primary-sidebar");
  if (sidebar && !sidebar.hasAttribute("role")) {
    sidebar.setAttribute("role", "complementary");
    sidebar.setAttribute("aria-label", "Book navigation");
  }

  const FOCUSABLE = 'a[href], button, input, select, textarea, [tabindex]:not([tabindex="-1"])';
  const SCROLLS = ["auto", "scroll"];

  function scrollCandidates() {
    const formulas = Array.from(document.querySelectorAll('mjx-container[display="true"]'));
    const outputs = Array.from(document.querySelectorAll(".cell_output .output, .cell_output .output div"))
      // A figure's box is left to arlm-figures.js: the figure itself takes the focus once it is drawn.
      .filter((box) => !box.closest("mjx-container") && !box.querySelector(".plotly-graph-div"))
      .filter((box) => SCROLLS.includes(getComputedStyle(box).overflowX));
    return formulas.map((el) => [el, "Formula"]).concat(outputs.map((el) => [el, "Output"]));
  }

  function markScrollableRegions() {
    for (const [box, kind] of scrollCandidates()) {
      const marked = box.dataset.arlmScrolls === "yes";
      const needsStop = box.scrollWidth > box.clientWidth + 1 && (marked || !box.querySelector(FOCUSABLE));
      if (needsStop && !marked) {
        box.dataset.arlmScrolls = "yes";
        box.setAttribute("tabindex", "0");
        box.setAttribute("role", "group");
        box.setAttribute("aria-label", kind + " wider than the page: scroll it with the arrow keys");
      } else if (!needsStop && marked) {
        delete box.dataset.arlmScrolls;
        box.removeAttribute("tabindex");
        box.removeAttribute("role");
        box.removeAttribute("aria-label");
      }
    }
  }

  function whenTypeset() {
    // MathJax (loaded by the page with its own config) typesets after DOMContentLoaded.
    const startup = window.MathJax && window.MathJax.startup && window.MathJax.startup.promise;
    if (startup) {
      startup.then(markScrollableRegions);
    } else if (document.querySelector(".math")) {
      setTimeout(whenTypeset, 200);
    } else {
      markScrollableRegions();
    }
  }

  let pendingResize = null;
  window.addEventListener("resize", function () {
    clearTimeout(pendingResize);
    pendingResize = setTimeout(markScrollableRegions, 150);
  });
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", whenTypeset);
  } else {
    whenTypeset();
  }
})();
