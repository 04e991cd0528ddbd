// Live job progress: every element with data-job-url is refreshed until its job finishes.
(() => {
  "use strict";
  const fmt = (seconds) => (seconds >= 90 ? `${(seconds / 60).toFixed(1)} min` : `${Math.round(seconds)} s`);
  for (const el of document.querySelectorAll("[data-job-url]")) {
    const set = (name, text) => { const t = el.querySelector(`[data-field=${name}]`); if (t) t.textContent = text; };
    const tick = async () => {
      const response = await fetch(el.dataset.jobUrl, { credentials: "same-origin" });
      if (!response.ok) return;
      const job = await response.json();
      const pct = Math.round(job.progress * 100);
      set("state", job.state); set("pct", `${pct}%`); set("message", job.message);
      const bar = el.querySelector("[role=progressbar]");
      if (bar) {
        bar.firstElementChild.style.width = `${pct}%`;
        bar.setAttribute("aria-valuenow", pct);
        bar.setAttribute("aria-valuetext", `${pct}%`);
      }
      const m = job.metrics || {};
      if (m.loss !== undefined) set("metrics", `epoch ${m.epoch} · step ${m.step}/${m.total_steps} · loss ${Number(m.loss).toFixed(4)} · ${Number(m.images_per_s).toFixed(1)} img/s · ETA ${fmt(m.eta_s)}${m.resumed_from ? ` · resumed from step ${m.resumed_from}` : ""}`);
      if (job.error) set("error", job.error);
      if (job.state === "queued" || job.state === "running") setTimeout(tick, 2000);
      else if (el.dataset.reloadWhenDone) window.location.reload();
    };
    if (["queued", "running"].includes(el.dataset.state)) setTimeout(tick, 2000);
  }
})();
