// The embedding map (templates/science/map.html): up to 100k sources on one canvas.
//
// Points are written straight into an ImageData buffer (a few milliseconds for 100k, where a
// fillRect per point takes tens), hover and click find the nearest point through a grid of
// cells a hit radius wide, the arrow keys walk from point to point, and a paged table lists
// the same sources for people who do not use the canvas. The data come as columns from
// map.json (rgzlabel.science.services.embedding_map).
(() => {
  const canvas = document.getElementById("map"), ctx = canvas.getContext("2d");
  const hover = document.getElementById("hover"), info = document.getElementById("map-info");
  const selected = document.getElementById("map-selected"), colour = document.getElementById("colour");
  const tableBody = document.querySelector("#map-table tbody");
  const previous = document.getElementById("map-table-previous"), next = document.getElementById("map-table-next");
  const range = document.getElementById("map-table-range");
  const TABLE_PAGE = 500; // rows per page of the table: 100k rows at once would stall the page
  const HIT_RADIUS = 8; // CSS pixels between the pointer and a point it hovers
  const palette = { FRI: [92, 200, 255], FRII: [255, 159, 92], hybrid: [200, 140, 255], unsure: [154, 167, 189] };
  const NO_VALUE = [58, 69, 96], OTHER_LABEL = [125, 255, 166];

  // The map: parallel arrays, index i is one source.
  let n = 0, ids = [], names = [], values = [], xs = null, ys = null, method = "";
  let px = new Float32Array(0), py = new Float32Array(0), packed = new Uint32Array(0), order = [];
  let grid = null, scale = null, chosen = -1, hovered = -1, page = 0, ratio = 1, pointSize = 6;

  // --- colours ---------------------------------------------------------------------------------
  function hslToRgb(h, s, l) {
    const k = (m) => (m + h / 30) % 12, a = s * Math.min(l, 1 - l);
    const f = (m) => l - a * Math.max(-1, Math.min(k(m) - 3, 9 - k(m), 1));
    return [f(0), f(8), f(4)].map((c) => Math.round(255 * c));
  }
  function rgbOf(v) {
    if (v === null || v === undefined) return NO_VALUE;
    if (typeof v === "string") return palette[v] || OTHER_LABEL;
    const t = Math.max(0, Math.min(1, scale ? (v - scale[0]) / (scale[1] - scale[0] || 1) : v));
    return hslToRgb(220 - 220 * t, 0.9, 0.6); // blue (low) to red (high)
  }
  const cssColour = (v) => `rgb(${rgbOf(v).join(",")})`;
  // ImageData is RGBA in memory: on the little-endian machines browsers run on, ABGR as a 32-bit word.
  const pack = ([r, g, b]) => ((255 << 24) | (b << 16) | (g << 8) | r) >>> 0;

  // --- words ---------------------------------------------------------------------------------
  // The colour value in words, for the hover, the table and the keyboard announcements.
  const valueText = (v) => {
    if (v === null || v === undefined) return "none yet";
    if (typeof v === "string") return v === "unsure" ? "not sure" : v;
    return colour.value === "size" ? `${v.toFixed(1)} arcsec` : v.toFixed(3);
  };
  const nameOf = (i) => `${names[i] || "source"} (#${ids[i]})`;
  const sourceUrl = (i) => `/science/sources/${ids[i]}/`;
  const colouring = () => colour.options[colour.selectedIndex].text;

  // --- layout and drawing ------------------------------------------------------------------------
  // Canvas pixels follow the element's size on screen (times the device's pixel ratio), 3:2.
  function layout() {
    ratio = window.devicePixelRatio || 1;
    const width = Math.max(300, Math.round(canvas.getBoundingClientRect().width * ratio));
    const height = Math.round((width * 2) / 3);
    if (canvas.width !== width || canvas.height !== height) { canvas.width = width; canvas.height = height; }
    pointSize = Math.max(1, Math.round((n > 30000 ? 2 : n > 5000 ? 3 : 6) * ratio));
    const margin = 10 * ratio;
    px = new Float32Array(n); py = new Float32Array(n);
    if (n) {
      let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
      for (let i = 0; i < n; i++) {
        x0 = Math.min(x0, xs[i]); x1 = Math.max(x1, xs[i]); y0 = Math.min(y0, ys[i]); y1 = Math.max(y1, ys[i]);
      }
      const sx = (width - 2 * margin) / (x1 - x0 || 1), sy = (height - 2 * margin) / (y1 - y0 || 1);
      for (let i = 0; i < n; i++) { px[i] = margin + (xs[i] - x0) * sx; py[i] = margin + (ys[i] - y0) * sy; }
    }
    grid = buildGrid();
  }

  // Points bucketed by cell (a counting sort): hit-testing looks at a few cells, not at every point.
  function buildGrid() {
    const cell = Math.max(4, HIT_RADIUS * ratio), cols = Math.ceil(canvas.width / cell) + 1;
    const rows = Math.ceil(canvas.height / cell) + 1, start = new Int32Array(cols * rows + 1);
    const cellOf = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      const c = Math.min(cols - 1, Math.max(0, Math.floor(px[i] / cell)));
      const r = Math.min(rows - 1, Math.max(0, Math.floor(py[i] / cell)));
      cellOf[i] = r * cols + c; start[cellOf[i] + 1]++;
    }
    for (let k = 0; k < cols * rows; k++) start[k + 1] += start[k];
    const fill = start.slice(0, -1), items = new Int32Array(n);
    for (let i = 0; i < n; i++) items[fill[cellOf[i]]++] = i;
    return { cell, cols, rows, start, items };
  }

  function nearestTo(x, y, radius) {
    if (!grid || !n) return -1;
    const { cell, cols, rows, start, items } = grid, reach = Math.ceil(radius / cell);
    const c0 = Math.floor(x / cell), r0 = Math.floor(y / cell);
    let best = -1, bestD = radius * radius;
    for (let r = Math.max(0, r0 - reach); r <= Math.min(rows - 1, r0 + reach); r++) {
      for (let c = Math.max(0, c0 - reach); c <= Math.min(cols - 1, c0 + reach); c++) {
        for (let k = start[r * cols + c]; k < start[r * cols + c + 1]; k++) {
          const i = items[k], d = (px[i] - x) ** 2 + (py[i] - y) ** 2;
          if (d < bestD) { best = i; bestD = d; }
        }
      }
    }
    return best;
  }

  function draw() {
    const started = performance.now(), width = canvas.width, height = canvas.height;
    const image = ctx.createImageData(width, height), pixels = new Uint32Array(image.data.buffer);
    const half = pointSize / 2;
    for (const i of order) {
      const left = Math.round(px[i] - half), top = Math.round(py[i] - half), c = packed[i];
      for (let y = Math.max(0, top); y < Math.min(height, top + pointSize); y++) {
        const row = y * width;
        for (let x = Math.max(0, left); x < Math.min(width, left + pointSize); x++) pixels[row + x] = c;
      }
    }
    ctx.putImageData(image, 0, 0);
    if (chosen >= 0) {
      ctx.strokeStyle = "#ffffff"; ctx.lineWidth = 2 * ratio;
      ctx.beginPath(); ctx.arc(px[chosen], py[chosen], pointSize + 5 * ratio, 0, 2 * Math.PI); ctx.stroke();
    }
    performance.measure("map-draw", { start: started, end: performance.now() }); // for bench/map_layout.py
  }

  // --- hover, click and the keyboard ---------------------------------------------------------------
  function preview(i, x, y) {
    hover.hidden = i < 0;
    if (i < 0) { hovered = -1; return; }
    // Beside the pointer, on its left near the right edge so that it stays on the card.
    // (x, y) are from the canvas's corner; the hover is placed in the card around it.
    const flip = x + 12 + hover.offsetWidth > canvas.offsetWidth;
    hover.style.left = `${canvas.offsetLeft + (flip ? x - 12 - hover.offsetWidth : x + 12)}px`;
    hover.style.top = `${canvas.offsetTop + y + 12}px`;
    if (i !== hovered) {
      hover.querySelector("img").src = `/sources/${ids[i]}/thumbnail.png`;
      hover.querySelector("div").textContent = `${nameOf(i)} ${valueText(values[i])}`;
      hovered = i;
    }
  }
  // Keyboard choice of a point: drawn with a ring, previewed, announced.
  function choose(i) {
    chosen = i;
    draw();
    if (i < 0) { selected.textContent = ""; preview(-1); return; }
    const box = canvas.getBoundingClientRect();
    preview(i, (px[i] * box.width) / canvas.width, (py[i] * box.height) / canvas.height);
    selected.textContent = `${nameOf(i)}: ${colouring()} ${valueText(values[i])}. Enter opens it.`;
  }
  // The nearest point in an arrow's direction (within 45 degrees of it if there is one).
  function step(from, dx, dy) {
    let best = -1, bestD = Infinity, loose = -1, looseD = Infinity;
    for (let i = 0; i < n; i++) {
      if (i === from) continue;
      const ax = px[i] - px[from], ay = py[i] - py[from];
      const along = ax * dx + ay * dy, across = Math.abs(ax * dy - ay * dx);
      if (along <= 0) continue;
      const d = ax * ax + ay * ay;
      if (across <= along && d < bestD) { best = i; bestD = d; }
      if (d < looseD) { loose = i; looseD = d; }
    }
    return best >= 0 ? best : loose;
  }
  function nearestToMiddle() {
    const mx = canvas.width / 2, my = canvas.height / 2;
    let best = 0, bestD = Infinity;
    for (let i = 0; i < n; i++) {
      const d = (px[i] - mx) ** 2 + (py[i] - my) ** 2;
      if (d < bestD) { best = i; bestD = d; }
    }
    return best;
  }
  const arrows = { ArrowRight: [1, 0], ArrowLeft: [-1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
  canvas.addEventListener("keydown", (event) => {
    if (!n) return;
    if (event.key in arrows) {
      event.preventDefault();
      if (chosen < 0) choose(nearestToMiddle()); // start nearest the middle
      else {
        const following = step(chosen, ...arrows[event.key]);
        if (following >= 0) choose(following);
      }
    } else if (event.key === "Enter" && chosen >= 0) {
      event.preventDefault();
      window.location = sourceUrl(chosen);
    } else if (event.key === "Escape" && chosen >= 0) {
      choose(-1);
    }
  });
  canvas.addEventListener("blur", () => { hover.hidden = true; });
  function pointerAt(event) {
    const box = canvas.getBoundingClientRect();
    const x = ((event.clientX - box.left) * canvas.width) / box.width;
    const y = ((event.clientY - box.top) * canvas.height) / box.height;
    return [nearestTo(x, y, HIT_RADIUS * ratio), event.clientX - box.left, event.clientY - box.top];
  }
  canvas.addEventListener("mousemove", (event) => { const [i, x, y] = pointerAt(event); preview(i, x, y); });
  canvas.addEventListener("mouseleave", () => { if (chosen < 0) preview(-1); });
  canvas.addEventListener("click", (event) => { const [i] = pointerAt(event); if (i >= 0) window.location = sourceUrl(i); });

  // --- the table: one page of rows at a time ---------------------------------------------------------
  function showPage(wanted) {
    const pages = Math.max(1, Math.ceil(n / TABLE_PAGE));
    page = Math.max(0, Math.min(pages - 1, wanted));
    const first = page * TABLE_PAGE, end = Math.min(n, first + TABLE_PAGE);
    const rows = document.createDocumentFragment();
    for (let i = first; i < end; i++) {
      const row = document.createElement("tr"), link = document.createElement("a");
      link.href = sourceUrl(i); link.textContent = nameOf(i); link.dataset.index = i;
      const cells = [link, valueText(values[i]), xs[i].toFixed(2), ys[i].toFixed(2)].map((content) => {
        const cell = document.createElement("td"); cell.append(content); return cell;
      });
      const swatch = document.createElement("span");
      swatch.textContent = "■ "; swatch.style.color = cssColour(values[i]); swatch.setAttribute("aria-hidden", "true");
      cells[1].prepend(swatch);
      row.append(...cells); rows.append(row);
    }
    tableBody.replaceChildren(rows);
    previous.hidden = next.hidden = pages < 2;
    previous.disabled = page === 0; next.disabled = page >= pages - 1;
    range.textContent = n ? `Sources ${first + 1} to ${end} of ${n}${pages > 1 ? ` (page ${page + 1} of ${pages})` : ""}.` : "";
  }
  previous.addEventListener("click", () => showPage(page - 1));
  next.addEventListener("click", () => showPage(page + 1));
  // Focusing a source in the table rings it on the map too.
  tableBody.addEventListener("focusin", (event) => {
    const i = Number(event.target.dataset && event.target.dataset.index);
    if (Number.isInteger(i) && i >= 0 && i < n) { chosen = i; draw(); }
  });

  // --- loading ---------------------------------------------------------------------------------
  async function load() {
    const response = await fetch(`${canvas.dataset.source}?colour=${encodeURIComponent(colour.value)}`);
    const data = await response.json();
    if (!response.ok) { info.textContent = data.error || `The map could not be loaded (${response.status}).`; return; }
    const categories = data.categories;
    n = data.count; ids = data.ids; names = data.names; method = data.method;
    values = categories ? data.values.map((v) => (v === null ? null : categories[v])) : data.values;
    xs = Float64Array.from(data.x); ys = Float64Array.from(data.y);
    let low = Infinity, high = -Infinity;
    for (const v of values) if (typeof v === "number") { low = Math.min(low, v); high = Math.max(high, v); }
    scale = low <= high ? [low, high] : null;
    packed = Uint32Array.from(values, (v) => pack(rgbOf(v)));
    // Sources without a value first, so the few labelled ones are drawn on top of the many.
    const empty = [], valued = [];
    values.forEach((v, i) => (v === null || v === undefined ? empty : valued).push(i));
    order = empty.concat(valued);
    chosen = -1; hovered = -1; selected.textContent = "";
    if (data.note) document.getElementById("map-note").textContent = data.note;
    layout();
    draw();
    document.getElementById("map-value-heading").textContent = colouring();
    document.getElementById("map-table-caption").textContent = n
      ? `${n} sources on the map (${method}), coloured by ${colouring()}.`
      : "No embedding yet.";
    showPage(0);
    info.textContent = n
      ? `${n} sources, ${data.embedding} projected by ${method}; click a point to open the source, or use the keyboard or the table.`
      : "No embedding yet.";
  }
  let resizing = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizing);
    resizing = setTimeout(() => { if (n) { layout(); draw(); } }, 150);
  });
  colour.addEventListener("change", load);
  load();
})();
