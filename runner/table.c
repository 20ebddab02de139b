/*
 * table.c -- RunnerMap: the runner's jobs by id.  Open addressing with
 * linear probing and backward-shift deletion (no tombstones, so a long
 * run of enqueues and completions never degrades lookups).  Kept at most
 * half full.  Ids are log seqs (dense, increasing), so they are mixed
 * with a multiplicative hash before masking.
 */
#include <errno.h>
#include <stdlib.h>

#include "runner.h"

static uint64_t id_of(const void *item)
{
	return *(const uint64_t *)item;
}

static size_t home(const RunnerMap *m, uint64_t id)
{
	return (size_t)((id * 0x9e3779b97f4a7c15ull) >> 20) & (m->cap - 1);
}

void *runner_map_get(const RunnerMap *m, uint64_t id)
{
	size_t i;

	if (!m->cap)
		return NULL;
	for (i = home(m, id); m->slot[i]; i = (i + 1) & (m->cap - 1))
		if (id_of(m->slot[i]) == id)
			return m->slot[i];
	return NULL;
}

static void place(RunnerMap *m, void *item)
{
	size_t i;

	for (i = home(m, id_of(item)); m->slot[i]; i = (i + 1) & (m->cap - 1)) {}
	m->slot[i] = item;
}

int runner_map_put(RunnerMap *m, void *item)
{
	if ((m->n + 1) * 2 > m->cap) {
		void **old = m->slot;
		size_t k, ocap = m->cap, ncap = ocap ? ocap * 2 : 1024;
		void **ns = calloc(ncap, sizeof *ns);

		if (!ns)
			return ENOMEM;
		m->slot = ns, m->cap = ncap;
		for (k = 0; k < ocap; k++)
			if (old[k])
				place(m, old[k]);
		free(old);
	}
	place(m, item);
	m->n++;
	return 0;
}

void runner_map_del(RunnerMap *m, uint64_t id)
{
	size_t mask = m->cap - 1, i, j, h;

	if (!m->cap)
		return;
	for (i = home(m, id); m->slot[i] && id_of(m->slot[i]) != id; i = (i + 1) & mask) {}
	if (!m->slot[i])
		return;
	m->slot[i] = NULL;
	m->n--;
	/* Shift later members of the run back unless their home lies
	 * cyclically in (i, j]: then the hole does not break their probe. */
	for (j = (i + 1) & mask; m->slot[j]; j = (j + 1) & mask) {
		h = home(m, id_of(m->slot[j]));
		if (((j - h) & mask) >= ((j - i) & mask)) {
			m->slot[i] = m->slot[j];
			m->slot[j] = NULL;
			i = j;
		}
	}
}

void runner_map_free(RunnerMap *m)
{
	free(m->slot);
	m->slot = NULL;
	m->cap = m->n = 0;
}
