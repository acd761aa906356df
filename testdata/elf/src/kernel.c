/*
 * A tiny vmlinux-shaped program for the strip tests. It is never run; every
 * object lands in the section a real kernel would put it in, so the linked
 * file has the same shape: .text, .init.text, .data, .data..percpu (linked
 * at address 0), .init.data, .bss and .rodata, plus DWARF for pahole to turn
 * into BTF. Built freestanding: nothing may call into libc (no memset etc.).
 */
#define noinline	__attribute__((noinline))
#define __init		__attribute__((section(".init.text"), __noinline__))
#define __initdata	__attribute__((section(".init.data")))
#define __percpu	__attribute__((section(".data..percpu")))

#define NR_TASKS	8
#define MAX_PRIO	140

struct list_head {
	struct list_head *next, *prev;
};

enum task_state {
	TASK_RUNNING = 0,
	TASK_INTERRUPTIBLE = 1,
	TASK_UNINTERRUPTIBLE = 2,
	TASK_DEAD = 64,
};

struct task_struct {
	volatile long state;
	int pid;
	int prio;
	unsigned int flags;
	unsigned long long sum_exec_runtime;
	struct task_struct *parent;
	struct list_head tasks;
	char comm[16];
};

struct rq {
	unsigned int nr_running;
	unsigned long nr_switches;
	unsigned long long clock;
	struct task_struct *curr;
	struct task_struct *idle;
	int cpu;
};

typedef long (*initcall_t)(void);

/* .rodata */
const char linux_banner[] =
	"Linux version 6.1.0-kcache (kcache@testdata) (gcc) #1 SMP PREEMPT\n";
const unsigned int sched_prio_to_weight[8] = {
	88761, 71755, 56483, 46273, 36291, 29154, 23254, 18705,
};

/* .data */
struct task_struct init_task = {
	.state = TASK_RUNNING,
	.pid = 0,
	.prio = 120,
	.comm = "swapper/0",
	.tasks = { &init_task.tasks, &init_task.tasks },
};
struct task_struct *task_table[NR_TASKS] = { &init_task };
volatile unsigned long jiffies = 1;

/* .bss */
struct task_struct tasks[NR_TASKS];
unsigned long long sched_clock_base;
unsigned long total_forks;

/* .data..percpu: per-CPU variables are offsets from address 0 */
__percpu struct rq runqueues = { .cpu = 0, .curr = &init_task, .idle = &init_task };
__percpu unsigned long this_cpu_off = 0;

/* .init.data */
__initdata char boot_command_line[64] = "console=ttyS0 root=/dev/vda quiet";
__initdata int initcall_debug = 1;

static noinline unsigned long long sched_clock(void)
{
	return sched_clock_base + (unsigned long long)jiffies * 4000000ULL;
}

static noinline struct task_struct *pick_next_task(struct rq *rq)
{
	struct task_struct *best = rq->idle;
	int best_prio = MAX_PRIO;
	int i;

	for (i = 0; i < NR_TASKS; i++) {
		struct task_struct *p = task_table[i];

		if (!p || p->state != TASK_RUNNING)
			continue;
		if (p->prio < best_prio) {
			best = p;
			best_prio = p->prio;
		}
	}
	return best;
}

static noinline void context_switch(struct rq *rq, struct task_struct *prev,
				    struct task_struct *next)
{
	unsigned long long now = sched_clock();

	prev->sum_exec_runtime += now - rq->clock;
	rq->clock = now;
	rq->curr = next;
	rq->nr_switches++;
}

long schedule(void)
{
	struct rq *rq = &runqueues;
	struct task_struct *prev = rq->curr;
	struct task_struct *next;
	unsigned int weight;

	if (prev->state == TASK_DEAD)
		rq->nr_running--;
	next = pick_next_task(rq);
	weight = sched_prio_to_weight[(unsigned int)next->prio & 7];
	if (next != prev)
		context_switch(rq, prev, next);
	else
		rq->clock = sched_clock();
	return (long)(weight + rq->nr_switches + this_cpu_off);
}

static __init long sched_init(void)
{
	struct rq *rq = &runqueues;

	rq->cpu = 0;
	rq->curr = rq->idle = &init_task;
	rq->nr_running = 1;
	return 0;
}

__initdata initcall_t initcalls[] = { sched_init };

__init void start_kernel(void)
{
	unsigned int i;
	int pid = 1;

	for (i = 1; i < NR_TASKS; i++) {
		struct task_struct *p = &tasks[i];

		p->pid = pid++;
		p->prio = 100 + (int)(i * 5);
		p->parent = &init_task;
		p->state = i & 1 ? TASK_RUNNING : TASK_INTERRUPTIBLE;
		task_table[i] = p;
		total_forks++;
	}
	for (i = 0; i < sizeof(initcalls) / sizeof(initcalls[0]); i++)
		initcalls[i]();
	if (boot_command_line[0] && initcall_debug)
		jiffies += 1;
}

__attribute__((noreturn)) void _start(void)
{
	start_kernel();
	for (;;)
		schedule();
}
