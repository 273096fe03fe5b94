// Charts of the job page: one uPlot per feature of each series card, from the server's
// downsampled data. Dragging across a chart asks the server for that range (more detail);
// double-clicking goes back to the page's range. Each card reports what it drew in data-*
// attributes (state, points, anomaly markers), which the browser tests read.
(function () {
  "use strict";

  const base = document.body.dataset.base;
  const COLORS = {
    value: "#0b6bcb",
    expected: "#7c8594",
    bound: "rgba(11, 107, 203, 0.45)",
    band: "rgba(11, 107, 203, 0.12)",
    anomaly: "#d62728",
  };

  // An error answer's detail is a sentence, or (FastAPI's 422 on a malformed request) a list of
  // pydantic errors, which showed as a bare "HTTP 422": say the first one's field and message.
  function errorText(payload, status) {
    const detail = payload && payload.detail;
    if (typeof detail === "string" && detail) return detail;
    const first = Array.isArray(detail) ? detail[0] : null;
    if (first && typeof first.msg === "string") {
      const field = (Array.isArray(first.loc) ? first.loc : []).filter((part) => part !== "body" && part !== "query").join(".");
      return field ? `${field}: ${first.msg}` : first.msg;
    }
    return `HTTP ${status}`;
  }

  function chartUrl(card, start, end, width) {
    const params = new URLSearchParams();
    params.set("series", card.dataset.series);
    if (start) params.set("start", start);
    if (end) params.set("end", end);
    if (Number(card.dataset.minScore) > 0) params.set("min_score", card.dataset.minScore);
    for (const feature of JSON.parse(card.dataset.features || "[]")) params.append("feature", feature);
    // About one bucket per pixel: each bucket sends at most four points plus its anomalies.
    params.set("buckets", String(Math.max(50, Math.min(2000, Math.round(width)))));
    return `${base}/data/jobs/${encodeURIComponent(card.dataset.job)}/chart?${params}`;
  }

  // The time axis spans the range the chart was asked for (the page's filters, a run's window,
  // a zoom), else the data's. uPlot's own range around a single point (a daily series' run, an
  // hourly run's one hour) spanned years, the point squeezed against the left edge.
  function timeRange(filters) {
    const asked = (text) => (text ? Date.parse(text) / 1000 : null);
    const start = asked(filters && filters.start);
    const end = asked(filters && filters.end);
    return (u, min, max) => {
      // The data's own span from its times (sorted): for a single point uPlot hands the range
      // function a span of 1,000 days after it (a one-hour series on the job page ended in 2026).
      const times = u.data && u.data[0] && u.data[0].length ? u.data[0] : [min, max];
      let low = start !== null ? start : times[0];
      let high = end !== null ? end : times[times.length - 1];
      if (!(high > low)) {
        // One instant and no range asked for: an hour either side of it.
        low -= 3600;
        high += 3600;
      }
      return [low, high];
    };
  }

  // Times as the tables show them: 24-hour UTC, ISO dates ("2024-03-03 14:00"). uPlot's own
  // labels were 12-hour ("2pm", "2:30pm") with US dates ("3/3/24"). A time's seconds show when the
  // job's points are under a minute apart (the card's data-seconds) or the time has any.
  function isoUtc(ts) {
    return new Date(ts * 1000).toISOString(); // 2024-03-03T14:00:30.000Z
  }

  function legendTime(seconds) {
    return (u, ts) => {
      if (ts == null) return "--";
      const iso = isoUtc(ts);
      const fine = seconds || iso.slice(17, 23) !== "00.000";
      return `${iso.slice(0, 10)} ${iso.slice(11, fine ? (iso.slice(19, 23) !== ".000" ? 23 : 19) : 16)}`;
    };
  }

  // The x axis' tick labels (uPlot's axis values function): the clock time, or the date for ticks a
  // day or more apart; under the first tick and wherever the day (or year) changes, the date.
  function axisTimes(holder) {
    return (u, splits, axisIdx, space, incr) => {
      const labels = [];
      let previous = null;
      for (const ts of splits) {
        const iso = isoUtc(ts);
        const day = iso.slice(0, 10);
        let label;
        if (incr >= 365 * 86400) label = iso.slice(0, 4);
        else if (incr >= 28 * 86400) label = iso.slice(0, 7);
        else if (incr >= 86400) {
          label = iso.slice(5, 10);
          if (previous === null || previous.slice(0, 4) !== day.slice(0, 4)) label += `\n${day.slice(0, 4)}`;
        } else {
          label = iso.slice(11, incr < 1 ? 23 : incr < 60 ? 19 : 16);
          if (previous !== day) label += `\n${day}`;
        }
        previous = day;
        labels.push(label);
      }
      // What the axis says, for the browser tests (uPlot draws it on a canvas).
      holder.dataset.xTicks = labels.join("|");
      return labels;
    };
  }

  function options(card, feature, filters, width, onZoom, holder) {
    return {
      title: feature.feature,
      width: width,
      height: 220,
      scales: { x: { time: true, range: timeRange(filters) } },
      // Times are shown in UTC, as everywhere in the pipelines, whatever the browser's zone.
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
      // The server downsamples: a drag asks it for the range instead of zooming into thinned data.
      cursor: { drag: { x: true, y: false, setScale: false }, sync: { key: card.dataset.series } },
      legend: { live: true },
      axes: [{ values: axisTimes(holder) }, {}],
      series: [
        { label: "time (UTC)", value: legendTime(card.dataset.seconds === "true") },
        { label: "lower", stroke: COLORS.bound, width: 1 },
        { label: "upper", stroke: COLORS.bound, width: 1 },
        { label: "expected", stroke: COLORS.expected, width: 1, dash: [6, 4] },
        { label: "value", stroke: COLORS.value, width: 1.5 },
        {
          label: "anomaly",
          stroke: COLORS.anomaly,
          fill: COLORS.anomaly,
          paths: () => null,
          points: { show: true, size: 9, width: 1, stroke: COLORS.anomaly, fill: COLORS.anomaly },
        },
      ],
      bands: [{ series: [2, 1], fill: COLORS.band }],
      hooks: {
        // The time range drawn, for the browser tests (uPlot sets its scales after the constructor).
        setScale: [
          (u, key) => {
            if (key !== "x") return;
            u.root.parentNode.dataset.xMin = String(u.scales.x.min);
            u.root.parentNode.dataset.xMax = String(u.scales.x.max);
          },
        ],
        setSelect: [
          (u) => {
            if (u.select.width < 2) return;
            const from = u.posToVal(u.select.left, "x");
            const to = u.posToVal(u.select.left + u.select.width, "x");
            u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
            onZoom(new Date(from * 1000).toISOString(), new Date(to * 1000).toISOString());
          },
        ],
      },
    };
  }

  function render(card, payload, onZoom) {
    const plots = card.querySelector(".plots");
    plots.replaceChildren();
    const width = Math.max(320, plots.clientWidth || card.clientWidth - 20);
    let anomalies = 0;
    let points = 0;
    let returned = 0;
    let valued = 0;
    for (const feature of payload.features) {
      const holder = document.createElement("div");
      holder.className = "plot";
      holder.dataset.feature = feature.feature;
      holder.dataset.anomalies = String(feature.anomalies);
      plots.appendChild(holder);
      const data = [feature.t, feature.lower, feature.upper, feature.expected, feature.value, feature.anomaly];
      new uPlot(options(card, feature, payload.filters, width, onZoom, holder), data, holder);
      anomalies += feature.anomalies;
      points += feature.points;
      returned += feature.returned;
      valued += feature.value.filter((value) => value !== null).length;
    }
    card.dataset.anomalyCount = String(anomalies);
    card.dataset.points = String(points);
    card.dataset.returned = String(returned);
    const status = card.querySelector(".chart-status");
    card.dataset.valued = String(valued);
    // A series whose values are all missing drew empty frames under "N points drawn": say why.
    if (!payload.features.length) status.textContent = "no points in this range";
    else if (!valued) status.textContent = `${points.toLocaleString()} points, every value missing: nothing to draw`;
    else status.textContent = `${points.toLocaleString()} points (${returned.toLocaleString()} drawn), ${anomalies} anomaly markers`;
  }

  async function load(card, start, end) {
    const plots = card.querySelector(".plots");
    const status = card.querySelector(".chart-status");
    const reset = card.querySelector(".reset-zoom");
    const zoomed = start !== card.dataset.start || end !== card.dataset.end;
    card.dataset.state = "loading";
    status.textContent = "loading…";
    try {
      const width = plots.clientWidth || card.clientWidth;
      const answer = await fetch(chartUrl(card, start, end, width), {
        credentials: "same-origin",
        headers: { Accept: "application/json" },
      });
      // A proxy's error page is not JSON: say its status rather than a JSON parser's complaint.
      const payload = await answer.json().catch(() => null);
      if (!answer.ok) throw new Error(errorText(payload, answer.status));
      render(card, payload, (from, to) => load(card, from, to));
      reset.hidden = !zoomed;
      card.dataset.state = "ready";
    } catch (error) {
      card.dataset.state = "error";
      status.textContent = `cannot load the chart: ${error.message}`;
    }
  }

  // Feedback: a person marks an anomalous point as a true anomaly or a false alarm (the API's
  // POST .../labels with the page's session; start = end = the point's time, the whole series).
  async function post(table, body) {
    const answer = await fetch(table.dataset.labelsUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: { Accept: "application/json", "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    // A proxy's error page is not JSON: say its status rather than a JSON parser's complaint.
    const payload = await answer.json().catch(() => null);
    if (!answer.ok) throw new Error(errorText(payload, answer.status));
    return payload;
  }

  function said(verdict) {
    return verdict ? "true anomaly" : "false alarm";
  }

  async function mark(table, row, verdict) {
    const text = row.querySelector(".verdict-text");
    text.textContent = "saving…";
    const point = { series: row.dataset.series, start: row.dataset.timestamp, end: row.dataset.timestamp, verdict: verdict };
    let label;
    try {
      label = await post(table, point);
    } catch (error) {
      text.textContent = `not saved: ${error.message}`;
      return;
    }
    // A feature's own label outranks a whole-series one (pipelines.labels.label_verdicts): where one
    // says otherwise at this point, the click alone changed nothing, yet the page said it did and a
    // reload showed the old verdict. The click means the point: say it on those features too, the
    // later word on each (a label of that one time, so their labels still hold around it).
    const features = [...new Set((label.overruled_by || []).map((other) => other.feature).filter((f) => f !== null))];
    for (const feature of features) {
      try {
        await post(table, { ...point, feature: feature });
      } catch (error) {
        // The whole-series label is stored, but the feature's own label still holds on it: which
        // verdict the point shows depends on its signals, as the page reads them on a reload.
        row.dataset.verdict = "";
        text.textContent = `saved for the series, not on ${feature}, whose own label outranks it: ${error.message}; reload to see the verdict that holds`;
        return;
      }
    }
    row.dataset.verdict = String(verdict);
    text.textContent = `marked: ${said(verdict)}` + (features.length ? ` (also on ${features.join(", ")}, whose own label said ${said(!verdict)})` : "");
  }

  for (const table of document.querySelectorAll("table.events[data-labels-url]")) {
    table.addEventListener("click", (event) => {
      const button = event.target.closest("button.mark");
      if (button) mark(table, button.closest("tr.event"), button.dataset.mark === "true");
    });
  }

  // The series selector lists the most anomalous series only: the search box asks the server
  // (the series data endpoint, q=) for the keys holding what was typed and offers them.
  for (const input of document.querySelectorAll("input[data-search-url]")) {
    const found = document.getElementById(input.getAttribute("list"));
    const status = input.parentElement.querySelector(".search-status");
    let timer = null;
    let asked = 0;
    input.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(async () => {
        const text = input.value.trim();
        const mine = ++asked;
        if (!text) {
          found.replaceChildren();
          return;
        }
        try {
          const answer = await fetch(`${input.dataset.searchUrl}&q=${encodeURIComponent(text)}`, {
            credentials: "same-origin",
            headers: { Accept: "application/json" },
          });
          const payload = await answer.json().catch(() => null);
          if (!answer.ok) throw new Error(errorText(payload, answer.status));
          if (mine !== asked) return; // a later search answered first: keep its suggestions
          found.replaceChildren(
            ...payload.series.map((row) => {
              const option = document.createElement("option");
              option.value = row.series;
              option.label = `${row.series} (${row.anomalies})`;
              return option;
            }),
          );
          input.dataset.found = String(payload.total);
        } catch (error) {
          // Not a validity error: that would block applying the form with a key typed in full.
          if (status) status.textContent = `cannot search the series: ${error.message}`;
        }
      }, 250);
    });
  }

  // Back and forward restore the filters form as it was left, edits never applied included: the
  // form then said "only series with anomalies" or a least score over tables and charts made
  // without, and applying it again changed the view. Show the filters the page was made with.
  // Only then: a first load's reset would drop what a person typed before the page finished loading.
  window.addEventListener("pageshow", (event) => {
    const navigation = performance.getEntriesByType("navigation")[0];
    if (!event.persisted && !(navigation && navigation.type === "back_forward")) return;
    for (const form of document.querySelectorAll("form.filters")) form.reset();
  });

  for (const card of document.querySelectorAll(".chart-card")) {
    const whole = () => load(card, card.dataset.start, card.dataset.end);
    card.querySelector(".reset-zoom").addEventListener("click", whole);
    card.querySelector(".plots").addEventListener("dblclick", whole);
    whole();
  }
})();
