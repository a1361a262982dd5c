'use strict';
// Crash consistency: kill -9 at random moments during a mixed load of
// creates, GETs and DELETEs, some DELETEs held at the mock upstream until
// the proxy times them out (and only then taking effect, as a slow
// upstream may), 20 rounds on one cache directory.  During the load no
// cache HIT ever serves an id whose delete had taken effect before the
// request was sent; after each restart no deleted id is served at all, and
// every 200 body served, at any time, equals the upstream's byte for byte.
const test = require('node:test');
const assert = require('node:assert/strict');
const h = require('../lib/harness');

const ROUNDS = 20;
const LOADERS = 6;

/* A deterministic generator, so that a failing run can be replayed. */
function rng(seed) {
	let s = seed >>> 0;
	return () => {
		s = (s * 1664525 + 1013904223) >>> 0;
		return s / 2 ** 32;
	};
}

test(`kill -9 under mixed load, ${ROUNDS} rounds: no deleted id served, every body the upstream's`, { timeout: 240000 }, async () => {
	const seed = Number(process.env.CRASH_SEED || Date.now() % 100000);
	const rand = rng(seed);
	const up = await h.startUpstream();
	const cacheDir = h.tmpdir();
	const deletedAt = new Map();		/* id -> ms its delete took effect */
	const expected = (id) => JSON.stringify(up.responseObject(up.get(id)));
	const problems = [];
	const note = (what) => { if (problems.length < 20) problems.push(`seed ${seed}: ${what}`); };
	let holdNext = false;

	up.override = (req, res) => {
		if (req.method !== 'DELETE') return false;
		const id = req.url.split('?')[0].split('/').pop();
		const rec = up.get(id);
		if (!rec || rec.deleted) return false;	/* the mock's own 404 */
		const apply = () => {
			if (!rec.deleted) {
				rec.deleted = true;
				deletedAt.set(id, Date.now());
			}
		};
		if (holdNext || rand() < 0.5) {
			// Held: the answer never comes; the delete takes effect only
			// when the proxy gives up on it (timeout, or its death).
			up.hung.add(res);
			res.on('close', () => { up.hung.delete(res); apply(); });
			return true;
		}
		apply();
		up.sendJSON(res, 200, { id, object: 'response.deleted', deleted: true });
		return true;
	};

	const ids = [];
	for (let i = 0; i < 12; i++) ids.push(up.seed({ input: `seed ${i}` }));
	const pick = () => ids[Math.floor(rand() * ids.length)];

	/* Check one GET's answer against the upstream's state when it was sent. */
	function check(id, r, sentAt, when) {
		if (r.status === 200) {
			const rec = up.get(id);
			if (rec && r.body !== expected(id)) note(`${when}: GET ${id} served a body that is not the upstream's`);
			const d = deletedAt.get(id);
			if (r.headers['x-cache'] === 'HIT' && d !== undefined && d < sentAt) {
				note(`${when}: GET ${id} was a HIT ${sentAt - d} ms after its delete took effect`);
			}
		} else if (r.status !== 404 && r.status < 500) {
			note(`${when}: GET ${id} answered ${r.status}`);
		}
	}

	try {
		let rounds = 0;
		for (let round = 0; round < ROUNDS; round++) {
			const px = await h.startProxy({ upstream: up.url, cacheDir, config: '[upstream]\ntimeout = 0.3\n' });

			// After the restart: nothing in flight, so every answer must be
			// exactly the upstream's, and a deleted id must be a 404.
			for (const id of ids) {
				const sentAt = Date.now();
				const r = await h.request(`${px.url}/v1/responses/${id}`);
				check(id, r, sentAt, `round ${round}, after restart`);
				if (up.get(id).deleted && r.status !== 404) note(`round ${round}: deleted ${id} answered ${r.status} after the restart`);
				if (!up.get(id).deleted && r.status !== 200) note(`round ${round}: live ${id} answered ${r.status} after the restart`);
			}

			// Mixed load until a kill -9 at a random moment.
			let dead = false;
			const agent = new (require('node:http').Agent)({ keepAlive: true, maxSockets: LOADERS });
			const loader = async () => {
				while (!dead) {
					const x = rand();
					const sentAt = Date.now();
					try {
						if (x < 0.15) {
							const r = await h.request(`${px.url}/v1/responses`, { method: 'POST', agent, timeout: 3000, body: { model: 'gpt-4o', input: `round ${round}` } });
							if (r.status === 200 && !dead) ids.push(r.json().id);
						} else if (x < 0.25) {
							await h.request(`${px.url}/v1/responses/${pick()}`, { method: 'DELETE', agent, timeout: 3000 });
						} else {
							const id = pick();
							const r = await h.request(`${px.url}/v1/responses/${id}`, { agent, timeout: 3000 });
							check(id, r, sentAt, `round ${round}, under load`);
						}
					} catch {
						/* the proxy was killed under it */
					}
				}
			};
			const loaders = Array.from({ length: LOADERS }, loader);
			// Make sure this round has a DELETE held when the kill comes.
			holdNext = true;
			const live = ids.filter((id) => !up.get(id).deleted);
			if (live.length) h.request(`${px.url}/v1/responses/${live[0]}`, { method: 'DELETE', agent, timeout: 3000 }).catch(() => {});
			await h.until(() => up.hung.size > 0 || live.length === 0, { what: 'a DELETE held at the upstream' });
			holdNext = false;
			await h.delay(50 + Math.floor(rand() * 400));
			process.kill(px.pid, 'SIGKILL');
			const { signal } = await px.exited;
			assert.equal(signal, 'SIGKILL');
			px.checkSanitizers();
			dead = true;
			await Promise.all(loaders);
			agent.destroy();
			// The held DELETEs' connections are gone: they take effect now.
			for (const res of [...up.hung]) res.destroy();
			await h.until(() => up.hung.size === 0, { what: 'the held DELETEs to close' });
			rounds++;
			// Keep some ids alive: new ones come from the creates.
			if (ids.filter((id) => !up.get(id).deleted).length < 4) {
				for (let i = 0; i < 4; i++) ids.push(up.seed({ input: `more ${round} ${i}` }));
			}
		}
		assert.equal(rounds, ROUNDS);
		assert.ok(deletedAt.size >= ROUNDS, `deletes took effect (${deletedAt.size})`);
		assert.deepEqual(problems, []);
	} finally {
		await up.close();
	}
});
