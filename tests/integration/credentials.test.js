'use strict';
// The upstream key replaces the client's bearer token; in pass-through mode
// each client key is its own tenant and tenants never share cache entries.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const h = require('../lib/harness');

test('with --upstream-key-file the upstream only ever sees the real key', async () => {
	const keyFile = path.join(h.tmpdir(), 'upstream.key');
	fs.writeFileSync(keyFile, 'sk-real-upstream\n', { mode: 0o600 });
	await h.withStack({
		upstream: { requireKey: 'sk-real-upstream' },
		proxy: { keyFile },
	}, async ({ up, px }) => {
		const auth = { authorization: 'Bearer client-token-xyz' };
		const c = await h.request(`${px.url}/v1/responses`, {
			method: 'POST', headers: auth, body: { model: 'gpt-4o', input: ['x', 'y'] },
		});
		assert.equal(c.status, 200, c.body);
		const id = c.json().id;
		const g = await h.request(`${px.url}/v1/responses/${id}?include[]=a`, { headers: auth });
		assert.equal(g.status, 200, g.body);
		const i = await h.request(`${px.url}/v1/responses/${id}/input_items`, { headers: auth });
		assert.equal(i.status, 200, i.body);
		const t = await h.request(`${px.url}/v1/responses/input_tokens`, {
			method: 'POST', headers: auth, body: { model: 'gpt-4o', input: 'count me' },
		});
		assert.equal(t.status, 200, t.body);
		assert.equal(t.json().object, 'response.input_tokens');
		const s = await h.openSSE(`${px.url}/v1/responses`, {
			method: 'POST', headers: auth, body: { model: 'gpt-4o', input: 'stream', stream: true },
		});
		assert.equal(s.status, 200);
		await s.done;
		const d = await h.request(`${px.url}/v1/responses/${id}`, { method: 'DELETE', headers: auth });
		assert.equal(d.status, 200, d.body);
		// A client without any Authorization is served with the real key too
		// (no client sections: no client auth).
		const n = await h.request(`${px.url}/v1/responses/input_tokens`, {
			method: 'POST', headers: { authorization: null }, body: { model: 'gpt-4o', input: 'anon' },
		});
		assert.equal(n.status, 200, n.body);

		assert.ok(up.requests.length >= 6, `upstream saw ${up.requests.length} requests`);
		for (const r of up.requests) {
			assert.equal(r.headers.authorization, 'Bearer sk-real-upstream', `${r.method} ${r.url}`);
			const all = JSON.stringify(r.headers) + r.url + r.body;
			assert.ok(!all.includes('client-token-xyz'), `client token leaked upstream in ${r.method} ${r.url}`);
		}
		assert.ok(!px.stderr().includes('sk-real-upstream'), 'the key does not appear in the log');
		assert.ok(!px.stderr().includes('client-token-xyz'), 'the client token does not appear in the log');
	});
});

test('pass-through mode: each client key is a tenant; tenants never share entries', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const A = { authorization: 'Bearer sk-tenant-a' };
		const B = { authorization: 'Bearer sk-tenant-b' };
		const c = await h.request(`${px.url}/v1/responses`, {
			method: 'POST', headers: A, body: { model: 'gpt-4o', input: 'mine' },
		});
		assert.equal(c.status, 200, c.body);
		assert.equal(up.requests[0].headers.authorization, 'Bearer sk-tenant-a', 'the client key is forwarded');
		const id = c.json().id;
		const p = `/v1/responses/${id}`;

		const a1 = await h.request(px.url + p, { headers: A });
		assert.equal(a1.status, 200);
		const a1b = await h.request(px.url + p, { headers: A });
		h.assertXCache(a1b, 'HIT', "A's GET of its own response (cached)");
		const before = up.count('GET', p);

		const b1 = await h.request(px.url + p, { headers: B });
		assert.equal(b1.status, 200);
		h.assertXCache(b1, 'MISS', "B's GET of A's id");
		assert.equal(up.count('GET', p), before + 1, "B's GET went upstream");
		const last = up.requests[up.requests.length - 1];
		assert.equal(last.headers.authorization, 'Bearer sk-tenant-b', "B's key was used for B's request");

		const a2 = await h.request(px.url + p, { headers: A });
		h.assertXCache(a2, 'HIT', "A's GET after B's");
		const b2 = await h.request(px.url + p, { headers: B });
		h.assertXCache(b2, 'HIT', "B's second GET (its own entry now)");
		assert.equal(up.count('GET', p), before + 1);

		// No key at all is a tenant of its own too: never served A's entry.
		const n = await h.request(px.url + p, { headers: { authorization: null } });
		assert.notEqual(n.headers['x-cache'], 'HIT', 'a client with no key is not served a keyed tenant entry');
	});
});

test('pass-through mode: DELETE is forwarded with the client key and drops that tenant entry', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const A = { authorization: 'Bearer sk-tenant-a' };
		const id = up.seed();
		const p = `/v1/responses/${id}`;
		h.assertXCache(await h.request(px.url + p, { headers: A }), 'MISS', 'A GET');
		h.assertXCache(await h.request(px.url + p, { headers: A }), 'HIT', 'A GET again');
		const d = await h.request(px.url + p, { method: 'DELETE', headers: A });
		assert.equal(d.status, 200);
		assert.equal(up.requests[up.requests.length - 1].headers.authorization, 'Bearer sk-tenant-a');
		const g = await h.request(px.url + p, { headers: A });
		assert.equal(g.status, 404);
	});
});
