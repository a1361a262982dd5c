'use strict';
// include[] is part of the cache key, normalised: order, duplicates and the
// three spellings (include[]=, include%5B%5D=, include=) map to one entry;
// a different set, or no include at all, is a different entry.
const test = require('node:test');
const assert = require('node:assert/strict');
const h = require('../lib/harness');

const A = 'message.output_text.logprobs';
const B = 'reasoning.encrypted_content';

test('include[] spellings and orders share one cache entry; other sets do not', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const id = up.seed({ input: 'include me' });
		const p = `/v1/responses/${id}`;
		const get = (q) => h.request(`${px.url}${p}${q}`);

		const v1 = await get(`?include[]=${B}&include[]=${A}`);
		assert.equal(v1.status, 200, v1.body);
		h.assertXCache(v1, 'MISS', 'include[]=B&include[]=A');
		assert.equal(v1.json().metadata.include, `${A},${B}`, 'the upstream saw both includes');
		assert.equal(up.count('GET', p), 1);

		const v2 = await get(`?include%5B%5D=${A}&include%5B%5D=${B}`);
		assert.equal(v2.status, 200);
		h.assertXCache(v2, 'HIT', 'include%5B%5D=A&include%5B%5D=B');
		assert.equal(v2.body, v1.body);

		const v3 = await get(`?include=${A}&include=${B}`);
		assert.equal(v3.status, 200);
		h.assertXCache(v3, 'HIT', 'include=A&include=B');
		assert.equal(v3.body, v1.body);

		const v4 = await get(`?include[]=${A}&include[]=${B}&include[]=${A}`);
		assert.equal(v4.status, 200);
		h.assertXCache(v4, 'HIT', 'duplicated include value');
		assert.equal(up.count('GET', p), 1, 'all equivalent spellings were served from one entry');

		const only = await get(`?include[]=${A}`);
		assert.equal(only.status, 200);
		h.assertXCache(only, 'MISS', 'include[]=A alone is another key');
		assert.equal(only.json().metadata.include, A);
		assert.notEqual(only.body, v1.body);
		assert.equal(up.count('GET', p), 2);

		// A plain GET is never answered from an include variant's entry...
		const plain = await get('');
		assert.equal(plain.status, 200);
		h.assertXCache(plain, 'MISS', 'plain GET after include variants');
		assert.equal(plain.json().metadata.include, undefined, 'plain body has no include echo');
		assert.equal(up.count('GET', p), 3);
		const plain2 = await get('');
		h.assertXCache(plain2, 'HIT', 'second plain GET');
		assert.equal(plain2.body, plain.body);

		// ...and the variants are still their own entries.
		const v5 = await get(`?include[]=${A}&include[]=${B}`);
		h.assertXCache(v5, 'HIT', 'include variant after plain GET');
		assert.equal(v5.body, v1.body);
		assert.equal(up.count('GET', p), 3);
	});
});

test('a cached plain entry does not answer an include variant', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const id = up.seed();
		const p = `/v1/responses/${id}`;
		const plain = await h.request(px.url + p);
		h.assertXCache(plain, 'MISS', 'plain GET');
		h.assertXCache(await h.request(px.url + p), 'HIT', 'plain GET again');

		const inc = await h.request(`${px.url}${p}?include%5B%5D=${A}`);
		assert.equal(inc.status, 200);
		h.assertXCache(inc, 'MISS', 'include variant after a cached plain GET');
		assert.equal(inc.json().metadata.include, A);
		assert.equal(up.count('GET', p), 2);
		// The forwarded query still carries the include (in some spelling).
		const last = up.requests[up.requests.length - 1];
		assert.deepEqual(h.parseQuery(last.url).include, [A], `forwarded url ${last.url}`);
	});
});

test('a create or cancel with a query string is never stored as the plain GET\'s entry', async () => {
	await h.withStack({}, async ({ up, px }) => {
		for (const q of ['?include[]=message.output_text.logprobs', '?include=reasoning.encrypted_content', '?x=1']) {
			const c = await h.request(`${px.url}/v1/responses${q}`, { method: 'POST', body: { model: 'gpt-4o', input: 'x' } });
			assert.equal(c.status, 200, c.body);
			h.assertXCache(await h.request(`${px.url}/v1/responses/${c.json().id}`), 'MISS', `plain GET after a create with ${q}`);
		}
		const id = up.seed({ background: true });
		const k = await h.request(`${px.url}/v1/responses/${id}/cancel?include[]=message.output_text.logprobs`, { method: 'POST' });
		assert.equal(k.status, 200, k.body);
		h.assertXCache(await h.request(`${px.url}/v1/responses/${id}`), 'MISS', 'plain GET after a cancel with a query');
	});
});

test('a request with OpenAI-Beta (the SDK\'s beta twins) never meets a cached entry, either way', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const beta = { 'openai-beta': 'responses_multi_agent=v1' };
		const id = up.seed();
		const p = `/v1/responses/${id}`;
		h.assertXCache(await h.request(px.url + p), 'MISS', 'plain');
		h.assertXCache(await h.request(px.url + p), 'HIT', 'plain again');
		for (const q of ['', '?beta=true']) {
			const r = await h.request(px.url + p + q, { headers: beta });
			assert.equal(r.status, 200);
			h.assertXCache(r, 'BYPASS', `beta${q}: never the plain entry`);
		}
		// A beta create's answer is not stored as the plain GET's.
		const c = await h.request(`${px.url}/v1/responses?beta=true`, { method: 'POST', headers: beta, body: { model: 'gpt-4o', input: 'x' } });
		assert.equal(c.status, 200, c.body);
		h.assertXCache(await h.request(`${px.url}/v1/responses/${c.json().id}`), 'MISS', 'the plain GET after a beta create');
		const c2 = await h.request(`${px.url}/v1/responses`, { method: 'POST', headers: beta, body: { model: 'gpt-4o', input: 'x' } });
		h.assertXCache(await h.request(`${px.url}/v1/responses/${c2.json().id}`), 'MISS', 'a beta header alone is enough');
		assert.equal(up.count('GET', p), 3, 'each beta GET reached the upstream');
	});
});
