'use strict';
// The official openai SDK (npm "openai", pinned in tests/package.json) works
// against the proxy: create, retrieve (cached), stream, paginated
// input_items, delete.
const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const h = require('../lib/harness');

// tests/node_modules first; then NODE_PATH (make distcheck runs from a
// tarball without node_modules, and points NODE_PATH at the checkout's).
function loadOpenAI() {
	try {
		return require(require.resolve('openai', { paths: [path.join(__dirname, '..')] }));
	} catch (e) {
		return require('openai');
	}
}

let OpenAI;
try {
	const mod = loadOpenAI();
	OpenAI = mod.OpenAI || mod.default || mod;
} catch (e) {
	console.log(`SKIP: the openai package is not installed (run "npm ci" in tests/): ${e.message}`);
	process.exit(77);
}

function client(px) {
	return new OpenAI({ baseURL: px.url + '/v1', apiKey: 'sk-test', maxRetries: 0, timeout: 10000 });
}

test('SDK: create, retrieve twice (second from the cache), stream', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const oa = client(px);
		const created = await oa.responses.create({ model: 'gpt-4o', input: 'Say hi' });
		assert.equal(created.status, 'completed');
		assert.ok(created.id.startsWith('resp_'));
		assert.ok(created.output_text.startsWith(`Answer for ${created.id}`), 'output_text helper works');

		const p = `/v1/responses/${created.id}`;
		const r1 = await oa.responses.retrieve(created.id);
		const n1 = up.count('GET', p);
		assert.ok(n1 <= 1, `at most one upstream GET (${n1})`);
		const r2 = await oa.responses.retrieve(created.id);
		assert.equal(up.count('GET', p), n1, 'the second retrieve did not reach the upstream');
		assert.equal(r1.id, created.id);
		assert.equal(r2.id, created.id);
		assert.deepEqual(r1.output, created.output);
		assert.deepEqual(r2.output, created.output);

		// A response the proxy has not seen: exactly one upstream GET for two retrieves.
		const seeded = up.seed({ input: 'seeded' });
		const s1 = await oa.responses.retrieve(seeded);
		const s2 = await oa.responses.retrieve(seeded);
		assert.equal(s1.id, seeded);
		assert.deepEqual(s2, s1);
		assert.equal(up.count('GET', `/v1/responses/${seeded}`), 1);

		const stream = await oa.responses.create({ model: 'gpt-4o', input: 'Stream hi', stream: true });
		const types = [];
		let completed = null;
		for await (const ev of stream) {
			types.push(ev.type);
			if (ev.type === 'response.completed') completed = ev.response;
		}
		assert.equal(types[0], 'response.created');
		assert.equal(types[types.length - 1], 'response.completed');
		assert.ok(types.includes('response.output_text.delta'));
		assert.ok(completed && completed.status === 'completed');
	});
});

test('SDK: input_items auto-pagination and delete', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const oa = client(px);
		const created = await oa.responses.create({
			model: 'gpt-4o',
			input: [
				{ role: 'user', content: 'one' },
				{ role: 'user', content: 'two' },
				{ role: 'user', content: 'three' },
			],
		});
		const got = [];
		for await (const item of oa.responses.inputItems.list(created.id, { limit: 1 })) {
			got.push(item);
			assert.ok(got.length <= 3, 'pagination ends');
		}
		assert.deepEqual(got.map((i) => i.content[0].text), ['three', 'two', 'one'], 'all 3 items, newest first');
		const pages = up.count('GET', `/v1/responses/${created.id}/input_items`);
		assert.ok(pages >= 3, `the upstream served the pages (${pages})`);

		// The same walk again comes from the cache.
		const again = [];
		for await (const item of oa.responses.inputItems.list(created.id, { limit: 1 })) again.push(item.id);
		assert.deepEqual(again, got.map((i) => i.id));
		assert.equal(up.count('GET', `/v1/responses/${created.id}/input_items`), pages, 'second walk was cached');

		await oa.responses.delete(created.id);
		assert.equal(up.count('DELETE', `/v1/responses/${created.id}`), 1);
		await assert.rejects(oa.responses.retrieve(created.id), (e) => {
			assert.ok(e instanceof OpenAI.NotFoundError, `NotFoundError, got ${e && e.constructor && e.constructor.name}: ${e && e.message}`);
			assert.equal(e.status, 404);
			return true;
		});
	});
});
