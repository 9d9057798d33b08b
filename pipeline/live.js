/*
 * Live runs in the landscape page: gradient descent as pipeline.optimize.fit runs it.
 *
 * The page carries Python's numbers (pipeline/live.py, written to round-trip exactly);
 * this script iterates in standardized coordinates with fit's update rules and stopping
 * rules, so that a run started here walks where `python -m pipeline.train` would
 * (tests/test_live.py compares the two). The MSE runs on its quadratic, O(1) an
 * iteration; a robust cost sums over the rows every iteration, in a Web Worker past the
 * first iterations, so that the page never freezes.
 *
 * window.downhill.run({theta0, theta1, method, lr, beta, b1, b2, max_iter, tol,
 *   divergence_ratio, coordinates, loss, loss_scale}) -> {path, loss, n_iter, status, message, lr, beta}
 *
 * Under Node (the tests) it exports {engine, run}; in a page it also draws.
 */
(function () {
  "use strict";

  // The numerical part: no DOM, so that a Web Worker and Node run it too.
  const OSCILLATION_WINDOW = 50; // pipeline.optimize.OSCILLATION_WINDOW
  const TINY = 2.2250738585072014e-308; // np.finfo(float).tiny
  const METHODS = ["gd", "momentum", "nesterov", "adam"];
  const STATUSES = ["converged", "diverged", "oscillating", "max_iter"];

  function dot(a, b) {
    let total = 0;
    for (let i = 0; i < a.length; i++) total += a[i] * b[i];
    return total;
  }
  function matVec(M, v) {
    return M.map((row) => dot(row, v));
  }
  function transposeVec(M, v) {
    // Mᵀ v
    const out = new Array(M[0].length).fill(0);
    for (let i = 0; i < M.length; i++) for (let j = 0; j < out.length; j++) out[j] += M[i][j] * v[i];
    return out;
  }

  // Standardizer.to_standard, one feature and an intercept.
  function toStandard(s, theta) {
    const weight = (theta[1] * s.x_scale) / s.y_scale;
    const intercept = (theta[0] + theta[1] * s.x_mean - s.y_mean) / s.y_scale;
    return [intercept, weight];
  }
  // Quadratic.loss_and_gradient: J(w) = wᵀQw − 2bᵀw + c.
  function quadratic(q) {
    const [[q00, q01], [q10, q11]] = q.Q;
    const [b0, b1] = q.b;
    return function (w) {
      const Qw0 = q00 * w[0] + q01 * w[1];
      const Qw1 = q10 * w[0] + q11 * w[1];
      const loss = w[0] * Qw0 + w[1] * Qw1 - 2 * (b0 * w[0] + b1 * w[1]) + q.c;
      return [loss, [2 * (Qw0 - b0), 2 * (Qw1 - b1)]];
    };
  }

  // Σρ̃, Σρ̃' and Σρ̃'·x over the rows (or their bins, weighted) for the residual
  // r = x·slope + constant − y/σ_y, with ρ̃ written out as pipeline.kernels._cost_and_slope
  // has it: one plain loop per cost, on typed arrays, so that no row allocates.
  function huberSums(x, target, weight, slope, constant, c, sums) {
    let total = 0, slopeSum = 0, cross = 0;
    for (let i = 0; i < x.length; i++) {
      const r = x[i] * slope + constant - target[i];
      const size = Math.abs(r);
      const inner = size < c ? size : c;
      const psi = 2 * (r > -c ? (r < c ? r : c) : -c);
      total += weight[i] * (inner * (2 * size - inner));
      slopeSum += weight[i] * psi;
      cross += weight[i] * psi * x[i];
    }
    sums[0] = total, sums[1] = slopeSum, sums[2] = cross;
  }
  function cauchySums(x, target, weight, slope, constant, c, sums) {
    const c2 = c * c;
    let total = 0, slopeSum = 0, cross = 0;
    for (let i = 0; i < x.length; i++) {
      const r = x[i] * slope + constant - target[i];
      const u2 = (r * r) / c2;
      const psi = (2 * r) / (1 + u2);
      total += weight[i] * (c2 * Math.log1p(u2));
      slopeSum += weight[i] * psi;
      cross += weight[i] * psi * x[i];
    }
    sums[0] = total, sums[1] = slopeSum, sums[2] = cross;
  }
  function welschSums(x, target, weight, slope, constant, c, sums) {
    const c2 = c * c;
    let total = 0, slopeSum = 0, cross = 0;
    for (let i = 0; i < x.length; i++) {
      const r = x[i] * slope + constant - target[i];
      const u2 = (r * r) / c2;
      const fade = u2 < 746 ? Math.exp(-u2) : 0; // exp(−746) is 0 in float64: the same sum, sooner
      const psi = 2 * r * fade;
      total += weight[i] * (c2 * (1 - fade));
      slopeSum += weight[i] * psi;
      cross += weight[i] * psi * x[i];
    }
    sums[0] = total, sums[1] = slopeSum, sums[2] = cross;
  }
  const ROW_SUMS = { 1: huberSums, 2: cauchySums, 3: welschSums };

  // RowCost.loss_and_gradient: J and ∇J at standardized w from one pass over the rows.
  function rowCost(data) {
    const s = data.scaler;
    const rows = data.rows;
    const yInv = 1 / s.y_scale;
    const x = Float64Array.from(rows.x);
    const target = Float64Array.from(rows.y, (value) => value * yInv); // as the kernel's ys·y_inv
    const weight = rows.weight ? Float64Array.from(rows.weight) : new Float64Array(x.length).fill(1);
    const n = rows.count;
    const c = data.cost.standard_scale;
    const pass = ROW_SUMS[data.cost.kind];
    const sums = new Float64Array(3);
    return function (w) {
      const slope = w[1] / s.x_scale;
      pass(x, target, weight, slope, w[0] - slope * s.x_mean + s.y_mean / s.y_scale, c, sums);
      const mean = sums[1] / n;
      return [sums[0] / n, [mean, (sums[2] / n - mean * s.x_mean) / s.x_scale]];
    };
  }

  // OriginalUnits: v = T·w + t, the cost times `factor`; Method.init's wrapper.
  function originalUnits(u) {
    return {
      toOriginal: (w) => matVec(u.T, w).map((value, i) => value + u.t[i]),
      toStandard: (v) =>
        matVec(
          u.T_inv,
          v.map((value, i) => value - u.t[i])
        ),
      gradient: (g) => transposeVec(u.T_inv, g).map((value) => u.factor * value),
    };
  }

  // Each method's update, as pipeline.methods builds it: (iteration, p, g) -> next p,
  // where `gradientAt` is the objective's gradient in the same coordinates.
  function methodUpdate(settings, gradientAt) {
    const lr = settings.lr;
    if (settings.method === "gd") return (_, p, g) => [p[0] - lr * g[0], p[1] - lr * g[1]];
    if (settings.method === "adam") {
      const b1 = settings.b1;
      const b2 = settings.b2;
      const first = [0, 0];
      const second = [0, 0];
      return (iteration, p, g) => {
        const next = [0, 0];
        for (let i = 0; i < 2; i++) {
          first[i] = b1 * first[i] + (1 - b1) * g[i];
          second[i] = b2 * second[i] + (1 - b2) * g[i] ** 2;
          const corrected1 = first[i] / (1 - b1 ** (iteration + 1));
          const corrected2 = second[i] / (1 - b2 ** (iteration + 1));
          next[i] = p[i] - (lr * corrected1) / (Math.sqrt(corrected2) + 1e-12);
        }
        return next;
      };
    }
    const beta = settings.beta;
    const lookAhead = settings.method === "nesterov";
    let velocity = [0, 0];
    return (_, p, g) => {
      if (lookAhead) g = gradientAt([p[0] + beta * velocity[0], p[1] + beta * velocity[1]]);
      velocity = [beta * velocity[0] - lr * g[0], beta * velocity[1] - lr * g[1]];
      return [p[0] + velocity[0], p[1] + velocity[1]];
    };
  }

  // A run's settings: the options given, else the page's defaults; lr="auto" settled
  // with the value Python settled (Method.settled), the momentum likewise.
  function settle(data, options) {
    const given = {};
    for (const [key, value] of Object.entries(options || {})) if (value !== undefined) given[key] = value;
    const method = given.method || data.defaults.method;
    // The sweep's own settings for its method; another method's come from its conf/optimizer file.
    const base = method === data.defaults.method ? data.defaults : data.methods[method] || { method };
    const chosen = Object.assign({}, base, given);
    chosen.given = Object.assign({}, chosen); // before "auto" is settled: what a command names
    if (!METHODS.includes(chosen.method)) {
      throw new Error(`method must be one of ${METHODS.join(", ")} here; ${data.not_offered}`);
    }
    if (!["standardized", "original"].includes(chosen.coordinates)) {
      throw new Error(`coordinates must be standardized or original, got ${chosen.coordinates}`);
    }
    const auto = data.auto[chosen.coordinates][chosen.method];
    const givenLr = chosen.lr;
    if (givenLr === "auto") chosen.lr = auto.lr;
    else if (!(typeof givenLr === "number" && givenLr > 0)) throw new Error(`lr must be a number > 0 or "auto", got ${givenLr}`);
    if (chosen.method === "momentum" || chosen.method === "nesterov") {
      if (chosen.beta === null || chosen.beta === undefined) chosen.beta = givenLr === "auto" ? auto.beta : 0.9;
      if (!(chosen.beta >= 0 && chosen.beta < 1)) throw new Error(`beta must be in [0, 1), got ${chosen.beta}`);
    }
    if (!(Number.isInteger(chosen.max_iter) && chosen.max_iter >= 1)) throw new Error(`max_iter must be an integer >= 1, got ${chosen.max_iter}`);
    if (!(chosen.tol >= 0)) throw new Error(`tol must be >= 0, got ${chosen.tol}`);
    if (!(chosen.divergence_ratio > 1)) throw new Error(`divergence_ratio must be > 1, got ${chosen.divergence_ratio}`);
    if (options && options.loss !== undefined && options.loss !== data.cost.name) {
      throw new Error(`this page carries the ${data.cost.name} cost; draw a sweep with model.loss=${options.loss} for that one`);
    }
    if (options && options.loss_scale !== undefined && options.loss_scale !== data.cost.scale) {
      throw new Error(`this page carries loss_scale=${data.cost.scale}; draw a sweep with model.loss_scale=${options.loss_scale} for that one`);
    }
    chosen.theta0 = Number(chosen.theta0 ?? 0);
    chosen.theta1 = Number(chosen.theta1 ?? 0);
    if (!Number.isFinite(chosen.theta0) || !Number.isFinite(chosen.theta1)) throw new Error("theta_init must be finite");
    return chosen;
  }

  // One run, stepped a few iterations at a time: fit's _Walk and _StoppingRules.
  function Walk(data, options) {
    const settings = settle(data, options);
    const s = data.scaler;
    const objective = data.rows ? rowCost(data) : quadratic(data.quadratic);
    let update;
    if (settings.coordinates === "standardized") {
      update = methodUpdate(settings, (w) => objective(w)[1]);
    } else {
      const units = originalUnits(data.units);
      const inner = methodUpdate(settings, (v) => units.gradient(objective(units.toStandard(v))[1]));
      update = (iteration, w, g) => units.toStandard(inner(iteration, units.toOriginal(w), units.gradient(g)));
    }
    const toMse = data.cost.factor;
    const theta0s = []; // the path, original units, intercept and slope apart (no pair allocated)
    const theta1s = [];
    const losses = [];
    let w = toStandard(s, [settings.theta0, settings.theta1]);
    let previous = w;
    let iteration = 0;
    let firstLoss = NaN;
    let gradNorm = NaN;
    let reversals = 0;
    let stepBefore = null;
    const standardLosses = []; // in the optimizer's units, as the stopping rules see them
    let stop = null;

    function check(loss, g) {
      if (iteration === 0) firstLoss = loss;
      if (loss > settings.divergence_ratio * Math.max(firstLoss, TINY)) {
        return ["diverged", `diverged at iteration ${iteration}: the loss grew past ${settings.divergence_ratio} times its initial value; lr=${settings.lr} is too large`];
      }
      gradNorm = Math.sqrt(dot(g, g));
      if (gradNorm <= settings.tol) {
        return ["converged", `converged after ${iteration} iterations: gradient norm ${gradNorm.toExponential(2)} <= tol ${settings.tol}`];
      }
      standardLosses.push(loss);
      if (reversals >= OSCILLATION_WINDOW) {
        // The last OSCILLATION_WINDOW + 1 losses, looked at only when the steps keep reversing.
        const recent = standardLosses.slice(-(OSCILLATION_WINDOW + 1));
        const rest = recent.slice(1);
        if (recent[0] * (1 - 1e-13) <= Math.min(...rest) && Math.max(...rest) <= recent[0] * (1 + 1e-13)) {
          return ["oscillating", `oscillating at iteration ${iteration}: every step reverses the one before and the loss has not fallen in ${OSCILLATION_WINDOW} iterations; lower lr (now ${settings.lr})`];
        }
      }
      if (iteration >= settings.max_iter) {
        return ["max_iter", `stopped at max_iter=${settings.max_iter}: gradient norm ${gradNorm.toExponential(2)} > tol ${settings.tol}; raise max_iter or lr`];
      }
      return null;
    }

    function stepped() {
      const moved = [w[0] - previous[0], w[1] - previous[1]];
      const length = Math.sqrt(dot(moved, moved));
      const reversed =
        stepBefore !== null &&
        length > 1e-6 * Math.max(1, Math.sqrt(dot(w, w))) &&
        dot(moved, stepBefore) < -0.99 * length * Math.sqrt(dot(stepBefore, stepBefore));
      reversals = reversed ? reversals + 1 : 0;
      stepBefore = moved;
    }

    // Advance up to `count` iterations; true once the run has stopped.
    this.advance = function (count) {
      for (let done = 0; done < count && stop === null; done++) {
        const [loss, g] = objective(w);
        if (!Number.isFinite(loss)) {
          if (iteration === 0) throw new Error("theta_init is so far off that the loss overflows float64");
          stop = ["diverged", `diverged at iteration ${iteration}: the loss became non-finite; lr=${settings.lr} is too large`];
          w = previous;
          iteration -= 1;
          break;
        }
        // Standardizer.to_original, written out.
        const slope = (w[1] * s.y_scale) / s.x_scale;
        theta0s.push(s.y_mean + s.y_scale * w[0] - slope * s.x_mean);
        theta1s.push(slope);
        losses.push(loss * toMse);
        stop = check(loss, g);
        if (stop === null) {
          previous = w;
          w = update(iteration, w, g);
          stepped();
          iteration += 1;
        }
      }
      return stop !== null;
    };
    this.settings = settings;
    this.result = function () {
      return {
        path: theta0s.map((theta0, i) => [theta0, theta1s[i]]),
        loss: losses.slice(),
        n_iter: iteration,
        status: stop ? stop[0] : "running",
        message: stop ? stop[1] : `running: ${iteration} iterations so far`,
        method: settings.method,
        lr: settings.lr,
        beta: settings.beta === undefined ? null : settings.beta,
        grad_norm: gradNorm,
      };
    };
  }

  // The command that records a live run in MLflow: every setting that differs from its defaults.
  function command(data, settings) {
    const parts = ["python -m pipeline.train"];
    const base = data.methods[settings.method] || data.defaults;
    if (settings.method !== "gd") parts.push(`optimizer=${settings.method}`);
    parts.push(`model.init.theta0=${settings.theta0}`, `model.init.theta1=${settings.theta1}`);
    // The settings a page carries (pipeline/live.py's LIVE_SETTINGS), in their order.
    for (const key of Object.keys(base).filter((name) => name !== "method")) {
      const given = settings.given[key];
      if (given === undefined || given === null) continue;
      if (given !== base[key]) parts.push(`optimizer.${key}=${given}`);
    }
    if (data.cost.name !== "mse") parts.push(`model.loss=${data.cost.name}`, `model.loss_scale=${data.cost.scale}`);
    return parts.join(" ");
  }

  // One iteration at a time: the step from iterate k split into the momentum it carries,
  // β·(θk − θk−1), and the gradient's part, −lr·∇J (at the look-ahead point for
  // nesterov; Adam's own step for adam), in θ's units: drawn head to tail at θk.
  function stepParts(result, k) {
    const path = result.path;
    const here = path[k];
    const next = path[k + 1] || here;
    const carried = (result.method === "momentum" || result.method === "nesterov") && k > 0;
    const momentum = carried ? [result.beta * (here[0] - path[k - 1][0]), result.beta * (here[1] - path[k - 1][1])] : [0, 0];
    return { k, here, momentum, gradient: [next[0] - here[0] - momentum[0], next[1] - here[1] - momentum[1]] };
  }

  function run(data, options) {
    const walk = new Walk(data, options);
    walk.advance(Infinity);
    return walk.result();
  }

  const api = { run, Walk, settle, command, stepParts, METHODS, STATUSES };

  if (typeof module !== "undefined" && module.exports) {
    module.exports = api; // Node: the tests and the bench
    return;
  }
  if (typeof window === "undefined") {
    if (typeof importScripts === "function") workerMain(api); // the page's Web Worker: this same script
    return;
  }

  const data = JSON.parse(document.getElementById("downhill-live-data").textContent);
  const PREVIEW = 200; // a robust run's first iterations, drawn at once; the rest from a Worker
  const LIVE_COLOUR = "#e7298a"; // magenta: apart from the sweep's oranges and the map's blues
  window.downhill = {
    data,
    run: (options) => api.run(data, options),
    command: (options) => api.command(data, api.settle(data, options)),
  };

  // The Worker runs this same script, taken from the page as it loads.
  const SOURCE = document.currentScript ? document.currentScript.textContent : "";
  function workerMain(api) {
    self.onmessage = (event) => {
      const { data, options } = event.data;
      try {
        const walk = new api.Walk(data, options);
        let last = Date.now();
        while (!walk.advance(500)) {
          if (Date.now() - last > 100) {
            self.postMessage(walk.result());
            last = Date.now();
          }
        }
        self.postMessage(walk.result());
      } catch (error) {
        self.postMessage({ error: String(error.message || error) });
      }
    };
  }

  window.addEventListener("load", () => setUp());

  function setUp() {
    const plot = document.getElementById("landscape");
    if (!plot || !window.Plotly || !plot.data) return setTimeout(setUp, 100);
    const contour = plot.data.findIndex((trace) => trace.type === "contour");
    const axisX = (plot.data[contour].xaxis || "x").replace("x", "xaxis");
    const axisY = (plot.data[contour].yaxis || "y").replace("y", "yaxis");
    const panel = buildPanel(plot);
    const frame = plot.layout[axisX].range.concat(plot.layout[axisY].range);
    // The 3-D view gets a trace; the map an SVG drawn over it, since restyling a trace
    // there redraws the contours (about 0.2 s): the path shows at once, the surface after.
    Plotly.addTraces(plot, [
      { type: "scatter3d", x: [], y: [], z: [], mode: "lines", name: "live run", showlegend: false, line: { color: LIVE_COLOUR, width: 6 }, scene: "scene", hoverinfo: "skip" },
    ]);
    const live3d = plot.data.length - 1;
    const overlay = mapOverlay(plot, axisX, axisY);
    let worker = null;
    let shown = null; // the result on screen
    let surfaceDue = null; // the 3-D view's next update, at most one a second

    function drawSurface() {
      surfaceDue = null;
      const xs = [], ys = [], zs = [];
      shown.path.forEach(([a, b], i) => {
        const inside = a >= frame[0] && a <= frame[1] && b >= frame[2] && b <= frame[3];
        xs.push(inside ? a : NaN);
        ys.push(inside ? b : NaN);
        zs.push(inside ? shown.loss[i] : NaN);
      });
      Plotly.restyle(plot, { x: [xs], y: [ys], z: [zs] }, [live3d]);
    }

    let stepAt = null; // step by step: the iterate shown, or null for the whole path

    function draw(result) {
      shown = result;
      overlay.draw(result.path, stepAt === null ? null : api.stepParts(result, stepAt));
      if (surfaceDue === null) surfaceDue = setTimeout(drawSurface, result.status === "running" ? 1000 : 0);
      else if (result.status !== "running") {
        clearTimeout(surfaceDue);
        surfaceDue = setTimeout(drawSurface, 0);
      }
      const end = result.path[result.path.length - 1] || [NaN, NaN];
      const approximate = data.rows && data.rows.error !== null ? ` (approximate, cost error ≤ ${data.rows.error.toExponential(1)}: summed over ${data.rows.bins} bins of ${data.rows.count} rows)` : "";
      const plateau = data.rows && result.status === "converged" && result.n_iter === 0 ? ": a plateau, where every residual is far beyond c, the gradient is 0 and descent cannot start" : "";
      panel.status.textContent = `${result.status}, ${result.n_iter} iterations${plateau}: θ = (${end[0].toLocaleString()}, ${end[1].toLocaleString()}), lr ${result.lr}${result.beta !== null ? `, β ${result.beta}` : ""}${approximate}`;
    }
    plot.on("plotly_afterplot", () => shown && draw(shown)); // zoomed, panned, resized

    function showStep(move) {
      if (!shown) return;
      stepAt = Math.max(0, Math.min((stepAt === null ? -1 : stepAt) + move, shown.path.length - 1));
      const parts = api.stepParts(shown, stepAt);
      const gradientName = shown.method === "adam" ? "Adam's step" : shown.method === "nesterov" ? "gradient part −lr·∇J at the look-ahead point" : "gradient part −lr·∇J";
      const format = ([a, b]) => `(${Number(a.toPrecision(4)).toLocaleString()}, ${Number(b.toPrecision(4)).toLocaleString()})`;
      panel.step.textContent =
        `iteration ${stepAt} of ${shown.n_iter}: θ = ${format(parts.here)}, cost ${shown.loss[stepAt].toPrecision(6)}; ` +
        `step = ${parts.momentum[0] || parts.momentum[1] ? `momentum β·(θk − θk−1) ${format(parts.momentum)} (orange) + ` : ""}` +
        `${gradientName} ${format(parts.gradient)} (black)`;
      draw(shown);
    }
    panel.forward.addEventListener("click", () => showStep(1));
    panel.back.addEventListener("click", () => showStep(-1));
    panel.whole.addEventListener("click", () => {
      stepAt = null;
      panel.step.textContent = "";
      if (shown) draw(shown);
    });

    function start(theta0, theta1) {
      const clicked = performance.now();
      const given = panel.settings();
      const options = Object.assign({ theta0, theta1 }, given);
      let settings;
      try {
        settings = api.settle(data, options);
      } catch (error) {
        panel.status.textContent = `error: ${error.message}`;
        return;
      }
      panel.command.textContent = api.command(data, settings);
      stepAt = null;
      panel.step.textContent = "";
      if (worker) worker.terminate();
      worker = null;
      // How long from the click to the path drawn (and, for a robust cost, to the last iterate).
      const timing = (window.downhill.timing = { clicked, drawn: null, finished: null });
      if (!data.rows) {
        draw(api.run(data, options));
        timing.drawn = timing.finished = performance.now();
        return;
      }
      const preview = new api.Walk(data, options);
      preview.advance(PREVIEW);
      draw(preview.result());
      timing.drawn = performance.now();
      if (preview.advance(0)) {
        timing.finished = timing.drawn;
        return;
      }
      worker = new Worker(URL.createObjectURL(new Blob([SOURCE], { type: "text/javascript" })));
      let latest = null; // the worker's newest result: drawn once per frame, older ones skipped
      worker.onmessage = (event) => {
        if (event.data.error) {
          panel.status.textContent = `error: ${event.data.error}`;
          timing.finished = performance.now();
          return;
        }
        if (latest === null) {
          requestAnimationFrame(() => {
            draw(latest);
            if (latest.status !== "running") timing.finished = performance.now();
            latest = null;
          });
        }
        latest = event.data;
      };
      worker.onerror = (event) => {
        panel.status.textContent = `error: the page's worker stopped: ${event.message}`;
      };
      worker.postMessage({ data, options });
    }

    window.downhill.start = start; // what a click on the map does, at (θ0, θ1)
    // Where on the screen a share (0 to 1) of the map's width and height is: for tests and benches.
    window.downhill.screenPoint = (share0, share1) => {
      const xa = plot._fullLayout[axisX];
      const ya = plot._fullLayout[axisY];
      const box = plot.getBoundingClientRect();
      return [box.left + xa._offset + share0 * xa._length, box.top + ya._offset + (1 - share1) * ya._length];
    };
    window.downhill.ready = true;
    // A click (not a drag, which zooms) anywhere in the map's plotting area, wherever the
    // mouse is: over a path, a hover label or the contours alike.
    let pressed = null;
    plot.addEventListener("mousedown", (event) => (pressed = [event.clientX, event.clientY]), true);
    plot.addEventListener(
      "click",
      (event) => {
        const xa = plot._fullLayout[axisX];
        const ya = plot._fullLayout[axisY];
        const box = plot.getBoundingClientRect();
        const px = event.clientX - box.left - xa._offset;
        const py = event.clientY - box.top - ya._offset;
        const dragged = pressed && Math.hypot(event.clientX - pressed[0], event.clientY - pressed[1]) > 4;
        if (dragged || px < 0 || px > xa._length || py < 0 || py > ya._length) return;
        // Rounded to a thousandth of the frame: a start a command can repeat, digit for digit.
        start(round(xa.p2d(px), frame[1] - frame[0]), round(ya.p2d(py), frame[3] - frame[2]));
      },
      true
    );
  }

  // An SVG over the map's plotting area that draws one path in the map's coordinates.
  function mapOverlay(plot, axisX, axisY) {
    const SVG = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(SVG, "svg");
    svg.style.cssText = "position:absolute;pointer-events:none;overflow:hidden";
    svg.id = "downhill-live-map";
    const line = document.createElementNS(SVG, "path");
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", LIVE_COLOUR);
    line.setAttribute("stroke-width", "3");
    line.setAttribute("stroke-linejoin", "round");
    const first = document.createElementNS(SVG, "circle");
    const last = document.createElementNS(SVG, "circle");
    [first, last].forEach((dot, i) => {
      dot.setAttribute("r", i ? "6" : "5");
      dot.setAttribute("fill", i ? LIVE_COLOUR : "white");
      dot.setAttribute("stroke", LIVE_COLOUR);
      dot.setAttribute("stroke-width", "2");
    });
    // Step by step: the momentum carried (orange) and the gradient's part (black), head to tail.
    const defs = document.createElementNS(SVG, "defs");
    const arrows = ["#ff7f00", "#111111"].map((colour, i) => {
      const marker = document.createElementNS(SVG, "marker");
      Object.entries({ id: `downhill-head-${i}`, viewBox: "0 0 10 10", refX: "9", refY: "5", markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse" }).forEach(([key, value]) => marker.setAttribute(key, value));
      const head = document.createElementNS(SVG, "path");
      head.setAttribute("d", "M0 0L10 5L0 10z");
      head.setAttribute("fill", colour);
      marker.appendChild(head);
      defs.appendChild(marker);
      const arrow = document.createElementNS(SVG, "line");
      arrow.setAttribute("stroke", colour);
      arrow.setAttribute("stroke-width", "3");
      arrow.setAttribute("marker-end", `url(#downhill-head-${i})`);
      return arrow;
    });
    svg.append(defs, line, first, last, ...arrows);
    plot.style.position = "relative";
    plot.appendChild(svg);
    return {
      draw(path, step) {
        const xa = plot._fullLayout[axisX];
        const ya = plot._fullLayout[axisY];
        Object.assign(svg.style, { left: `${xa._offset}px`, top: `${ya._offset}px`, width: `${xa._length}px`, height: `${ya._length}px` });
        svg.setAttribute("viewBox", `0 0 ${xa._length} ${ya._length}`);
        // Segments between the points inside the frame (a point far outside breaks the line).
        const [low0, high0] = xa.range;
        const [low1, high1] = ya.range;
        let d = "";
        let drawing = false;
        const ends = [];
        const shownPath = step ? path.slice(0, step.k + 1) : path;
        for (const [a, b] of shownPath) {
          if (!(a >= low0 && a <= high0 && b >= low1 && b <= high1)) {
            drawing = false;
            continue;
          }
          const px = xa.d2p(a).toFixed(1);
          const py = ya.d2p(b).toFixed(1);
          d += `${drawing ? "L" : "M"}${px} ${py}`;
          drawing = true;
          ends.push([px, py]);
        }
        line.setAttribute("d", d);
        const pixel = (a, b) => [Math.max(-1e5, Math.min(1e5, xa.d2p(a))), Math.max(-1e5, Math.min(1e5, ya.d2p(b)))];
        arrows.forEach((arrow, i) => {
          const visible = step && (i ? step.gradient : step.momentum).some((value) => value !== 0);
          arrow.style.display = visible ? "" : "none";
          if (!visible) return;
          const from = i ? [step.here[0] + step.momentum[0], step.here[1] + step.momentum[1]] : step.here;
          const part = i ? step.gradient : step.momentum;
          const [x1, y1] = pixel(from[0], from[1]);
          const [x2, y2] = pixel(from[0] + part[0], from[1] + part[1]);
          Object.entries({ x1, y1, x2, y2 }).forEach(([key, value]) => arrow.setAttribute(key, value.toFixed(1)));
        });
        [first, last].forEach((dot, i) => {
          const at = ends.length ? ends[i ? ends.length - 1 : 0] : null;
          dot.style.display = at ? "" : "none";
          if (at) {
            dot.setAttribute("cx", at[0]);
            dot.setAttribute("cy", at[1]);
          }
        });
      },
    };
  }

  function round(value, span) {
    const unit = 10 ** Math.floor(Math.log10(span / 1000));
    return Number((Math.round(value / unit) * unit).toPrecision(12));
  }

  function buildPanel(plot) {
    const panel = document.createElement("div");
    panel.id = "downhill-live";
    panel.style.cssText = "font:14px sans-serif;margin:6px 40px;line-height:1.8";
    const defaults = data.defaults;
    const method = defaults.method in data.methods ? defaults.method : "gd";
    panel.innerHTML = `
      <b>Live run:</b> click the map to start gradient descent there.
      method <select id="live-method">${Object.keys(data.methods).map((name) => `<option${name === method ? " selected" : ""}>${name}</option>`).join("")}</select>
      coordinates <select id="live-coordinates"><option${defaults.coordinates !== "original" ? " selected" : ""}>standardized</option><option${defaults.coordinates === "original" ? " selected" : ""}>original</option></select>
      lr <input id="live-lr" type="range" min="-4" max="1" step="0.01" style="width:160px;vertical-align:middle"> <span id="live-lr-value"></span>
      <label><input id="live-auto" type="checkbox"> auto</label>
      β <input id="live-beta" type="number" min="0" max="0.999" step="0.01" placeholder="auto" style="width:60px">
      budget <input id="live-budget" type="number" min="1" step="1" style="width:80px"> iterations
      <button id="live-back" title="one iteration back">◀ step</button><button id="live-forward" title="one iteration on: the step's parts as arrows">step ▶</button><button id="live-whole" title="the whole path">whole path</button>
      <span id="live-step"></span>
      <br><span id="live-status">${data.not_offered}.</span>
      <br>records it in MLflow: <code id="live-command" style="user-select:all"></code>`;
    plot.parentNode.insertBefore(panel, plot);
    const element = (id) => panel.querySelector(`#live-${id}`);
    const slider = element("lr");
    // The slider spans 10⁻⁴ to 10 times the auto step of the chosen method and coordinates.
    function autoLr() {
      return data.auto[element("coordinates").value][element("method").value].lr;
    }
    // The rate a run takes: a setting's own value until the slider moves, then three digits.
    let lr = null;
    function showLr() {
      element("lr-value").textContent = element("auto").checked ? `auto (${autoLr().toPrecision(3)})` : String(lr);
      slider.disabled = element("auto").checked;
    }
    function setTo(own) {
      element("auto").checked = own.lr === "auto" || own.lr === null;
      lr = element("auto").checked ? Number(autoLr().toPrecision(3)) : own.lr;
      slider.value = Math.log10(lr / autoLr());
      element("budget").value = own.max_iter;
      element("beta").value = own.beta ?? "";
      element("beta").disabled = !["momentum", "nesterov"].includes(element("method").value);
      showLr();
    }
    function reset() {
      const name = element("method").value;
      const own = name === defaults.method ? defaults : data.methods[name];
      // A rate in other coordinates means another thing: start from auto there.
      setTo(element("coordinates").value === (own.coordinates || "standardized") ? own : Object.assign({}, own, { lr: "auto" }));
    }
    ["method", "coordinates"].forEach((id) => element(id).addEventListener("change", reset));
    slider.addEventListener("input", () => {
      lr = Number((autoLr() * 10 ** Number(slider.value)).toPrecision(3));
      showLr();
    });
    element("auto").addEventListener("change", showLr);
    reset();
    return {
      status: element("status"),
      step: element("step"),
      forward: element("forward"),
      back: element("back"),
      whole: element("whole"),
      command: element("command"),
      settings() {
        const chosen = { method: element("method").value, coordinates: element("coordinates").value };
        chosen.lr = element("auto").checked ? "auto" : lr;
        chosen.max_iter = Number(element("budget").value);
        const beta = element("beta").value;
        if (beta !== "" && !element("beta").disabled) chosen.beta = Number(beta);
        return chosen;
      },
    };
  }
})();
