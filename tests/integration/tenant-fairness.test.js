'use strict';
// One tenant cannot evict another's entries: eviction takes the oldest
// entries of the tenant that holds the most, so a tenant filling the cache
// with its own responses (or, before, with query variants of them) evicts
// only its own, while a tenant within its share keeps every entry.
const test = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');
const h = require('../lib/harness');

test('a tenant flooding the cache evicts only its own entries', { timeout: 120000 }, async () => {
	await h.withStack({ proxy: { config: '[cache]\nmax_size = 256k\n' } }, async ({ up, px }) => {
		const alice = { authorization: 'Bearer sk-alice' };
		const mallory = { authorization: 'Bearer sk-mallory' };
		const mine = [];
		for (let i = 0; i < 8; i++) mine.push(up.seed({ input: `alice ${i}` }));
		for (const id of mine) h.assertXCache(await h.request(`${px.url}/v1/responses/${id}`, { headers: alice }), 'MISS', 'alice fills');

		// Mallory reads 300 responses of ~3 KB: over three times the cache.
		const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
		const flood = [];
		for (let i = 0; i < 300; i++) flood.push(up.seed({ input: `m ${i}` }));
		for (let i = 0; i < flood.length; i += 4) {
			await Promise.all(flood.slice(i, i + 4).map((id) => h.request(`${px.url}/v1/responses/${id}`, { headers: mallory, agent })));
		}
		// And asks for query variants of one id (unknown parameters).
		for (let i = 0; i < 40; i++) {
			const r = await h.request(`${px.url}/v1/responses/${flood[0]}?x=${i}`, { headers: mallory, agent });
			assert.equal(r.status, 200);
		}
		agent.destroy();

		for (const id of mine) {
			h.assertXCache(await h.request(`${px.url}/v1/responses/${id}`, { headers: alice }), 'HIT', `alice's ${id} after the flood`);
		}
		// Mallory's own oldest went, her newest stayed.
		h.assertXCache(await h.request(`${px.url}/v1/responses/${flood[1]}`, { headers: mallory }), 'MISS', 'mallory\'s oldest');
		h.assertXCache(await h.request(`${px.url}/v1/responses/${flood[299]}`, { headers: mallory }), 'HIT', 'mallory\'s newest');
	});
});
