/*
 * stop.c: stop-string matching with a hold-back buffer. The held suffix is
 * always shorter than the longest stop string, so the work per call is
 * O((held + len) * total stop bytes) with small constants.
 */
#include "engine/stop.h"

#include <errno.h>
#include <string.h>

void stop_init(struct stop_matcher *m)
{
	memset(m, 0, sizeof(*m));
}

int stop_add(struct stop_matcher *m, const char *s, size_t len)
{
	if (len == 0 || len > STOP_MAX_LEN)
		return -EINVAL;
	if (m->n >= STOP_MAX)
		return -ENOSPC;
	memcpy(m->str[m->n], s, len);
	m->len[m->n++] = len;
	return 0;
}

/* Earliest position in buf[0..n) where a stop string starts and fully
 * matches; n when none. */
static size_t find_stop(const struct stop_matcher *m, const char *buf, size_t n)
{
	size_t best = n;
	for (int i = 0; i < m->n; i++) {
		size_t L = m->len[i];
		for (size_t p = 0; p + L <= n && p < best; p++)
			if (buf[p] == m->str[i][0] && memcmp(buf + p, m->str[i], L) == 0) {
				best = p;
				break;
			}
	}
	return best;
}

/* Length of the longest suffix of buf[0..n) that is a proper prefix of
 * some stop string. */
static size_t partial_suffix(const struct stop_matcher *m, const char *buf, size_t n)
{
	size_t best = 0;
	for (int i = 0; i < m->n; i++) {
		size_t L = m->len[i];
		size_t max = L - 1 < n ? L - 1 : n;
		for (size_t k = max; k > best; k--)
			if (memcmp(buf + n - k, m->str[i], k) == 0) {
				best = k;
				break;
			}
	}
	return best;
}

size_t stop_feed(struct stop_matcher *m, const char *text, size_t len, char *out)
{
	if (m->hit)
		return 0;
	if (m->n == 0) {
		memcpy(out, text, len);
		return len;
	}
	/* Work in out: held bytes, then the new text. */
	memcpy(out, m->hold, m->n_hold);
	memcpy(out + m->n_hold, text, len);
	size_t n = m->n_hold + len;
	size_t at = find_stop(m, out, n);
	if (at < n) {
		m->hit = true;
		m->n_hold = 0;
		return at;
	}
	size_t keep = partial_suffix(m, out, n);
	memcpy(m->hold, out + n - keep, keep);
	m->n_hold = keep;
	return n - keep;
}

size_t stop_flush(struct stop_matcher *m, char *out)
{
	size_t n = m->hit ? 0 : m->n_hold;
	memcpy(out, m->hold, n);
	m->n_hold = 0;
	return n;
}
