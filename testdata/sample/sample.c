/* A tiny vmlinux-shaped program: a few kernel-named symbols, data, bss and
 * debug info, so the sample cache entry has a real ELF vmlinux to store. */
struct rq { long nr_running; long clock; };

struct rq runqueues[4];
unsigned long __per_cpu_offset[4] = { 0, 0x1000, 0x2000, 0x3000 };
const char linux_banner[] = "Linux version 6.1.0-sample (kcache testdata)\n";

__attribute__((noinline)) long schedule(void)
{
	long n = 0;
	for (int i = 0; i < 4; i++)
		n += runqueues[i].nr_running + (long)__per_cpu_offset[i];
	return n;
}

void startup_64(void)
{
	for (;;)
		schedule();
}
