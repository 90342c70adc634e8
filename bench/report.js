// bench.report's page script, inlined before plotly.js: it makes the tables sortable and
// filterable at once (window.reportTablesMs), and defines reportDrawFigures(), which the page calls
// after plotly.js (4.8 MB to evaluate). Figures near the screen are drawn first, the others one at
// a time in the background, so the page is usable before every figure is drawn.
(function () {
  "use strict";

  function applyFilters(block) {
    const selects = Array.from(block.querySelectorAll("select"));
    const rows = block.querySelectorAll("tbody tr");
    let shown = 0;
    rows.forEach((tr) => {
      const ok = selects.every((s) => !s.value || tr.cells[+s.dataset.col].dataset.v === s.value);
      tr.style.display = ok ? "" : "none";
      if (ok) shown++;
    });
    const count = block.querySelector(".count");
    if (count) count.textContent = shown + " of " + rows.length + " rows";
  }

  function sortBy(th, column) {
    const tbody = th.closest("table").tBodies[0];
    const dir = th.classList.contains("asc") ? -1 : 1;
    th.parentNode.querySelectorAll("th").forEach((h) => h.classList.remove("asc", "desc"));
    th.classList.add(dir > 0 ? "asc" : "desc");
    const rows = Array.from(tbody.rows);
    rows.sort((a, b) => {
      const x = a.cells[column].dataset.v;
      const y = b.cells[column].dataset.v;
      if (x === "" || y === "") return (x === "") - (y === "");  // empty (NaN) last
      const nx = Number(x);
      const ny = Number(y);
      if (!Number.isNaN(nx) && !Number.isNaN(ny)) return dir * (nx - ny);
      return dir * x.localeCompare(y);
    });
    rows.forEach((r) => tbody.appendChild(r));
  }

  document.querySelectorAll(".table-block").forEach((block) => {
    block.querySelectorAll("select").forEach((s) => {
      s.addEventListener("change", () => applyFilters(block));
    });
    block.querySelectorAll("table.sortable th").forEach((th, i) => {
      th.addEventListener("click", () => sortBy(th, i));
    });
    applyFilters(block);
  });
  window.reportTablesMs = performance.now();

  window.reportDrawFigures = function () {
    const template = JSON.parse(document.getElementById("plotly-template").textContent);
    const config = { displaylogo: false, responsive: true, showLink: false, showSendToCloud: false };
    const figs = Array.from(document.querySelectorAll("div.fig"));
    const jobs = new Map();
    let drawn = 0;

    function finished() {
      window.reportReadyMs = performance.now();
      window.reportReady = true;
      document.body.dataset.ready = "true";
    }

    function draw(div) {
      if (!jobs.has(div)) {
        const spec = JSON.parse(document.getElementById(div.id + "-data").textContent);
        spec.layout.template = template;
        jobs.set(div, Plotly.newPlot(div, spec.data, spec.layout, config).then(() => {
          div.dataset.rendered = "true";
          if (++drawn === figs.length) finished();
        }));
      }
      return jobs.get(div);
    }

    const observer = new IntersectionObserver((entries) => {
      entries.forEach((e) => {
        if (e.isIntersecting) {
          observer.unobserve(e.target);
          draw(e.target);
        }
      });
    }, { rootMargin: "600px" });
    figs.forEach((div) => observer.observe(div));

    const onScreen = figs.filter((div) => div.getBoundingClientRect().top < window.innerHeight);
    Promise.all(onScreen.map(draw)).then(() => {
      window.reportFirstViewMs = performance.now();
      let next = 0;
      (function drawRest() {
        while (next < figs.length && jobs.has(figs[next])) next++;
        if (next < figs.length) draw(figs[next]).then(() => setTimeout(drawRest, 0));
      })();
    });
    if (figs.length === 0) finished();
    window.reportDrawAll = () => Promise.all(figs.map(draw));
  };
})();
