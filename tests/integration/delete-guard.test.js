'use strict';
// A deleted response is never served from the cache, whatever becomes of
// the DELETE on the proxy's side: a DELETE writes its id's guard before it
// is forwarded, and an answer fetched before the delete could have taken
// effect is never stored.  The cases: the DELETE times out, its connection
// is cut, the upstream fails it (5xx) or refuses it (4xx), the proxy is
// killed with the DELETE in flight, and a DELETE through one key while
// another key holds the id in its cache.
const test = require('node:test');
const assert = require('node:assert/strict');
const h = require('../lib/harness');

/* The mock holds DELETEs (after applying them, or not) until released. */
function holdDeletes(up, { apply = true } = {}) {
	const held = [];
	const prev = up.override;
	up.override = (req, res, body) => {
		if (req.method === 'DELETE') {
			const id = req.url.split('?')[0].split('/').pop();
			const rec = up.get(id);
			if (apply && rec) rec.deleted = true;
			held.push({ req, res, id });
			up.hung.add(res);
			res.on('close', () => up.hung.delete(res));
			return true;
		}
		return prev ? prev(req, res, body) : false;
	};
	return held;
}

/* The mock answers a GET with the body it had before the delete. */
function staleGets(up, id, body) {
	const prev = up.override;
	up.override = (req, res, b) => {
		if (req.method === 'GET' && req.url.split('?')[0] === `/v1/responses/${id}`) {
			res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
			res.end(body);
			return true;
		}
		return prev ? prev(req, res, b) : false;
	};
}

/* Every GET of p answers what the upstream says, never a HIT. */
async function neverHit(px, up, p, n = 3) {
	for (let i = 0; i < n; i++) {
		const g = await h.request(px.url + p);
		assert.notEqual(g.headers['x-cache'], 'HIT', `GET #${i + 1} of ${p} was served from the cache: ${g.status} ${g.body.slice(0, 120)}`);
	}
}

/* Requests the proxy is handling now, from its /metrics. */
const inflight = (px) => h.metric(px, 'respcache_inflight_requests');

const FAST = '[upstream]\ntimeout = 1\n';

test('a DELETE that times out: a GET that raced it is not stored, later GETs ask the upstream', async () => {
	await h.withStack({ proxy: { config: FAST } }, async ({ up, px }) => {
		const id = up.seed();
		const p = `/v1/responses/${id}`;
		const old = JSON.stringify(up.responseObject(up.get(id)));
		h.assertXCache(await h.request(px.url + p), 'MISS', 'first GET');
		h.assertXCache(await h.request(px.url + p), 'HIT', 'cached');

		// The DELETE is applied upstream but its answer never comes back.
		holdDeletes(up);
		// A GET racing it still sees the old body upstream (a replica lag).
		staleGets(up, id, old);
		const del = h.request(px.url + p, { method: 'DELETE' });
		await h.until(() => up.count('DELETE', p) === 1, { what: 'the DELETE to reach the upstream' });
		const raced = await h.request(px.url + p);
		assert.equal(raced.status, 200, 'the GET that raced the DELETE gets the upstream\'s answer');
		assert.notEqual(raced.headers['x-cache'], 'HIT', 'the entry was dropped before the DELETE went out');
		const d = await del;
		h.assertOpenAIError(d, 504, 'the DELETE timed out at the proxy');
		// Even while the upstream still answers the old body, it is never
		// stored again: the outcome of the DELETE is unknown.
		await neverHit(px, up, p);
		up.override = null;
		const g = await h.request(px.url + p);
		h.assertOpenAIError(g, 404, 'the upstream says the id is gone');
	});
});

test('a DELETE whose connection is cut, or that the upstream fails with 5xx, leaves the id uncached', async () => {
	for (const how of ['cut', '500', '502']) {
		await h.withStack({ proxy: { config: FAST } }, async ({ up, px }) => {
			const id = up.seed();
			const p = `/v1/responses/${id}`;
			const old = JSON.stringify(up.responseObject(up.get(id)));
			h.assertXCache(await h.request(px.url + p), 'MISS', `${how}: first GET`);
			up.override = (req, res) => {
				if (req.method !== 'DELETE') return false;
				up.get(id).deleted = true;	/* it may have happened */
				if (how === 'cut') res.socket.destroy();
				else up.sendError(res, Number(how), 'boom', 'server_error', null);
				return true;
			};
			const d = await h.request(px.url + p, { method: 'DELETE' });
			assert.ok(d.status >= 500, `${how}: DELETE answered ${d.status}`);
			staleGets(up, id, old);
			await neverHit(px, up, p);
		});
	}
});

test('a DELETE the upstream refuses (4xx) lets the id be cached again', async () => {
	for (const status of [401, 429, 400]) {
		await h.withStack({}, async ({ up, px }) => {
			const id = up.seed();
			const p = `/v1/responses/${id}`;
			h.assertXCache(await h.request(px.url + p), 'MISS', 'first GET');
			up.failNext(status, { error: { message: 'no', type: 'invalid_request_error', param: null, code: null } });
			assert.equal((await h.request(px.url + p, { method: 'DELETE' })).status, status);
			h.assertXCache(await h.request(px.url + p), 'MISS', `${status}: after the refused DELETE, the entry was dropped`);
			h.assertXCache(await h.request(px.url + p), 'HIT', `${status}: and cached again`);
		});
	}
});

test('killed with a DELETE in flight: after the restart the id is never served from the cache', async () => {
	const up = await h.startUpstream();
	const cacheDir = h.tmpdir();
	try {
		let px = await h.startProxy({ upstream: up.url, cacheDir });
		const ids = [up.seed(), up.seed()];
		for (const id of ids) {
			h.assertXCache(await h.request(`${px.url}/v1/responses/${id}`), 'MISS', 'first GET');
			h.assertXCache(await h.request(`${px.url}/v1/responses/${id}`), 'HIT', 'cached');
		}
		const [gone, kept] = ids;
		const olds = ids.map((id) => JSON.stringify(up.responseObject(up.get(id))));
		holdDeletes(up);
		h.request(`${px.url}/v1/responses/${gone}`, { method: 'DELETE' }).catch(() => {});
		await h.until(() => up.count('DELETE') === 1, { what: 'the DELETE to reach the upstream' });
		process.kill(px.pid, 'SIGKILL');
		await px.exited;
		px.checkSanitizers();
		up.close();

		const up2 = await h.startUpstream();
		try {
			// The new upstream still has the old bodies for both ids.
			staleGets(up2, gone, olds[0]);
			px = await h.startProxy({ upstream: up2.url, cacheDir });
			await neverHit(px, up2, `/v1/responses/${gone}`);
			assert.equal(up2.count('GET', `/v1/responses/${gone}`), 3, 'each GET of the deleted id asked the upstream');
			h.assertXCache(await h.request(`${px.url}/v1/responses/${kept}`), 'HIT', 'the other id is still cached');
			await px.stop();
		} finally {
			await up2.close();
		}
	} finally {
		await up.close();
	}
});

test('a DELETE through one key removes the id from every key\'s cache', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const id = up.seed();
		const p = `/v1/responses/${id}`;
		const other = { authorization: 'Bearer sk-other-key' };
		h.assertXCache(await h.request(px.url + p, { headers: other }), 'MISS', 'other key, first GET');
		h.assertXCache(await h.request(px.url + p, { headers: other }), 'HIT', 'other key, cached');
		assert.equal((await h.request(px.url + p, { method: 'DELETE' })).status, 200);
		const g = await h.request(px.url + p, { headers: other });
		const j = h.assertOpenAIError(g, 404, 'the other key after the DELETE');
		assert.equal(j.error.message, `Response with id '${id}' not found.`);
	});
});

test('a DELETE that the upstream answers 404 for one key does not touch another key\'s view', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const id = up.seed();
		const p = `/v1/responses/${id}`;
		const other = { authorization: 'Bearer sk-other-key' };
		h.assertXCache(await h.request(px.url + p, { headers: other }), 'MISS', 'other key, first GET');
		up.failNext(404, { error: { message: `Response with id '${id}' not found.`, type: 'invalid_request_error', param: null, code: null } });
		assert.equal((await h.request(px.url + p, { method: 'DELETE' })).status, 404);
		h.assertOpenAIError(await h.request(px.url + p), 404, 'the deleting key gets its tombstone');
		const g = await h.request(px.url + p, { headers: other });
		assert.equal(g.status, 200, 'the other key still reads the id');
		h.assertXCache(await h.request(px.url + p, { headers: other }), 'HIT', 'and caches it again');
	});
});

test('tombstone_ttl = 0: no tombstone is served, yet a GET that raced the DELETE is not stored', async () => {
	await h.withStack({ proxy: { config: '[cache]\ntombstone_ttl = 0\n' } }, async ({ up, px }) => {
		const id = up.seed();
		const p = `/v1/responses/${id}`;
		const held = h.holdGets(up);
		const slow = h.request(px.url + p);
		await h.until(() => held.length === 1, { what: 'the GET to reach the upstream' });
		const body = JSON.stringify(up.responseObject(up.get(id)));
		up.override = null;
		assert.equal((await h.request(px.url + p, { method: 'DELETE' })).status, 200);
		held[0].res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
		held[0].res.end(body);
		assert.equal((await slow).status, 200, 'the GET that started first gets its answer');
		const g = await h.request(px.url + p);
		h.assertOpenAIError(g, 404, 'GET after the DELETE');
		h.assertXCache(g, 'MISS', 'no tombstone: the upstream answered, not a stale entry');
	});
});

test('a DELETE retried after its 200 (the upstream now says 404) keeps the id guarded', async () => {
	await h.withStack({ proxy: { config: '[cache]\ntombstone_ttl = 0\n' } }, async ({ up, px }) => {
		const id = up.seed();
		const p = `/v1/responses/${id}`;
		const body = JSON.stringify(up.responseObject(up.get(id)));
		const held = h.holdGets(up);
		const slow = h.request(px.url + p);
		await h.until(() => held.length === 1, { what: 'the GET to reach the upstream' });
		up.override = null;
		assert.equal((await h.request(px.url + p, { method: 'DELETE' })).status, 200);
		assert.equal((await h.request(px.url + p, { method: 'DELETE' })).status, 404, 'the retry');
		held[0].res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
		held[0].res.end(body);
		assert.equal((await slow).status, 200);
		const g = await h.request(px.url + p);
		h.assertOpenAIError(g, 404, 'GET after both DELETEs');
		assert.notEqual(g.headers['x-cache'], 'HIT');
	});
});

test('a GET sent after a DELETE never shares a fetch that began before it', async () => {
	await h.withStack({ proxy: { config: '[cache]\ntombstone_ttl = 0\n' } }, async ({ up, px }) => {
		const id = up.seed();
		const p = `/v1/responses/${id}`;
		const body = JSON.stringify(up.responseObject(up.get(id)));
		const held = h.holdGets(up);
		const first = h.request(px.url + p);
		await h.until(() => held.length === 1, { what: 'the first GET to reach the upstream' });
		const joined = h.request(px.url + p);	/* waits on the first fetch */
		await h.until(async () => (await inflight(px)) === 2, { what: 'the second GET to wait on the first fetch' });
		assert.equal((await h.request(px.url + p, { method: 'DELETE' })).status, 200);
		const after = h.request(px.url + p);
		await h.until(() => held.length === 2, { what: 'the GET after the DELETE to reach the upstream on its own' });
		held[1].res.writeHead(404, { 'content-type': 'application/json' });
		held[1].res.end(JSON.stringify({ error: { message: `Response with id '${id}' not found.`, type: 'invalid_request_error', param: null, code: null } }));
		h.assertOpenAIError(await after, 404, 'the GET sent after the DELETE');
		held[0].res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
		held[0].res.end(body);
		assert.equal((await first).status, 200, 'the GET that began before the DELETE');
		assert.equal((await joined).status, 200, 'and the one that joined it then');
	});
});

test('a DELETE whose client leaves still runs to its outcome', async () => {
	for (const status of [404, 200]) {
		await h.withStack({}, async ({ up, px }) => {
			const id = up.seed();
			const p = `/v1/responses/${id}`;
			h.assertXCache(await h.request(px.url + p), 'MISS', 'first GET');
			const held = holdDeletes(up, { apply: false });
			const ac = h.request(px.url + p, { method: 'DELETE', timeout: 300 }).catch((e) => e);
			await h.until(() => held.length === 1, { what: 'the DELETE to reach the upstream' });
			assert.ok((await ac) instanceof Error, 'the client gave up');
			// Its request goes on without its client, for the DELETE's outcome.
			await h.until(async () => (await h.inState(px, 'orphaned')) === 1, { what: 'the proxy to see the client go' });
			up.override = null;
			if (status === 200) {
				up.get(id).deleted = true;
				up.sendJSON(held[0].res, 200, { id, object: 'response.deleted', deleted: true });
				// A GET racing the outcome may still go upstream (a 404 MISS).
				await h.until(async () => {
					const r = await h.request(px.url + p);
					return r.status === 404 && r.headers['x-cache'] === 'HIT';
				}, { what: 'the tombstone to answer' });
				h.assertXCache(await h.request(px.url + p), 'HIT', 'the tombstone answers');
			} else {
				up.notFound(held[0].res, id);
				// Refused: the guard is released, and the id is cached again.
				await h.until(async () => (await h.request(px.url + p)).headers['x-cache'] === 'HIT',
					{ what: 'the id cached again once the DELETE was refused' });
			}
		});
	}
});

test('a DELETE answered 202 or 204 counts as deleted; a 3xx keeps the id guarded', async () => {
	for (const status of [202, 204, 302]) {
		await h.withStack({}, async ({ up, px }) => {
			const id = up.seed();
			const p = `/v1/responses/${id}`;
			const old = JSON.stringify(up.responseObject(up.get(id)));
			h.assertXCache(await h.request(px.url + p), 'MISS', `${status}: first GET`);
			up.override = (req, res) => {
				if (req.method !== 'DELETE') return false;
				res.writeHead(status, status === 302 ? { location: '/elsewhere', 'content-length': '0' } : { 'content-length': '0' });
				res.end();
				return true;
			};
			assert.equal((await h.request(px.url + p, { method: 'DELETE' })).status, status);
			staleGets(up, id, old);
			if (status === 302) {
				await neverHit(px, up, p);
			} else {
				const g = await h.request(px.url + p);
				h.assertOpenAIError(g, 404, `${status}: the tombstone`);
				h.assertXCache(g, 'HIT', `${status}: answered by the tombstone`);
			}
		});
	}
});
