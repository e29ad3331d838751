import { describe, expect, it } from "vitest";
import { choleskySolve, ridgeSolve } from "../../../src/forecast/linalg.js";
import { nelderMead } from "../../../src/forecast/optimize.js";
import {
  difference,
  fromStationary,
  kpssStatistic,
  KPSS_CRITICAL_5PCT,
  psiWeights,
  expand,
  toStationary,
} from "../../../src/forecast/models/arima-core.js";
import { gaussian, seededRandom } from "../../../src/forecast/stats.js";

describe("choleskySolve", () => {
  it("solves a symmetric positive-definite system", () => {
    // A = [[4,2],[2,3]], x = [1,2] => b = [8, 8]
    const x = choleskySolve(Float64Array.of(4, 2, 2, 3), Float64Array.of(8, 8), 2)!;
    expect(x[0]).toBeCloseTo(1);
    expect(x[1]).toBeCloseTo(2);
  });

  it("refuses a matrix that is not positive definite", () => {
    expect(choleskySolve(Float64Array.of(1, 2, 2, 1), Float64Array.of(1, 1), 2)).toBeUndefined();
  });
});

describe("ridgeSolve", () => {
  it("recovers exact coefficients with no penalty", () => {
    const rows = 20;
    const x = new Float64Array(rows * 2);
    const y = new Float64Array(rows);
    for (let r = 0; r < rows; r++) {
      x[r * 2] = 1;
      x[r * 2 + 1] = r;
      y[r] = 3 + 0.5 * r;
    }
    const beta = ridgeSolve(x, y, rows, 2, [0, 0])!;
    expect(beta[0]).toBeCloseTo(3, 5);
    expect(beta[1]).toBeCloseTo(0.5, 5);
  });

  it("shrinks penalised coefficients towards 0", () => {
    const x = Float64Array.of(1, 1, 1, 1);
    const y = Float64Array.of(2, 2, 2, 2);
    expect(ridgeSolve(x, y, 4, 1, [100])![0]).toBeLessThan(0.2);
  });
});

describe("nelderMead", () => {
  it("finds the minimum of a shifted quadratic", () => {
    const r = nelderMead((p) => (p[0] - 3) ** 2 + (p[1] + 1) ** 2, [0, 0], {
      maxEvaluations: 500,
      tolerance: 1e-12,
    });
    expect(r.x[0]).toBeCloseTo(3, 3);
    expect(r.x[1]).toBeCloseTo(-1, 3);
  });

  it("treats a non-finite objective as very bad instead of failing", () => {
    const r = nelderMead((p) => (p[0] < 0 ? NaN : (p[0] - 1) ** 2), [2]);
    expect(r.x[0]).toBeCloseTo(1, 2);
  });
});

describe("ARIMA arithmetic", () => {
  it("maps any reals to stationary coefficients and back", () => {
    const x = [0.3, -1.2, 2];
    const phi = toStationary(x);
    expect(Array.from(fromStationary(phi)).map((v) => Number(v.toFixed(6)))).toEqual(x);
    // an AR(1) coefficient stays inside (-1, 1) however large the input
    expect(Math.abs(toStationary([50])[0])).toBeLessThan(1);
  });

  it("expands seasonal AR polynomials into past-value coefficients", () => {
    // (1 - 0.5B)(1 - 0.4B^4): z_t = 0.5 z_{t-1} + 0.4 z_{t-4} - 0.2 z_{t-5}
    const ar = expand([0.5], [0.4], 4, -1);
    expect(Array.from(ar.lags)).toEqual([1, 4, 5]);
    expect(Array.from(ar.coefs).map((c) => Number(c.toFixed(6)))).toEqual([0.5, 0.4, -0.2]);
  });

  it("gives psi weights of 1 for a random walk", () => {
    const none = expand([], [], 1, -1);
    expect(Array.from(psiWeights(none, expand([], [], 1, 1), 1, 0, 1, 5))).toEqual([1, 1, 1, 1, 1]);
  });

  it("differences at a lag", () => {
    expect(Array.from(difference(Float64Array.of(1, 4, 9, 16), 1))).toEqual([3, 5, 7]);
    expect(Array.from(difference(Float64Array.of(1, 4, 9, 16), 2))).toEqual([8, 12]);
  });

  it("KPSS rejects a random walk and accepts white noise", () => {
    const rand = seededRandom(11);
    const noise = Float64Array.from({ length: 500 }, () => gaussian(rand));
    let acc = 0;
    const walk = Float64Array.from(noise, (e) => (acc += e));
    expect(kpssStatistic(noise)).toBeLessThan(KPSS_CRITICAL_5PCT);
    expect(kpssStatistic(walk)).toBeGreaterThan(KPSS_CRITICAL_5PCT);
  });
});
