/* Cortex-M4 startup for the emulated board: vector table, reset handler (enable the FPU, copy
 * .data, zero .bss, paint the stack), fault handler, and the painted-stack scan. */
#include <stdint.h>

#include "hio.h"

#define STACK_PAINT 0xA5A5A5A5u

extern uint32_t __data_start, __data_end, __data_load, __bss_start, __bss_end;
extern uint32_t __stack_limit, __stack_top;
int main(void);

void Reset_Handler(void) __attribute__((noreturn));
void Fault_Handler(void) __attribute__((noreturn));

__attribute__((section(".vectors"), used)) void (*const rnnpool_vectors[16])(void) = {
    (void (*)(void))(&__stack_top), /* initial SP */
    Reset_Handler,
    Fault_Handler, /* NMI */
    Fault_Handler, /* HardFault */
    Fault_Handler, /* MemManage */
    Fault_Handler, /* BusFault */
    Fault_Handler, /* UsageFault */
    0, 0, 0, 0,
    Fault_Handler, /* SVCall */
    Fault_Handler, /* DebugMonitor */
    0,
    Fault_Handler, /* PendSV */
    Fault_Handler, /* SysTick */
};

void Reset_Handler(void) {
    /* CPACR: full access to CP10/CP11 (the FPU) before any floating-point instruction. */
    *(volatile uint32_t *)0xE000ED88u |= 0xFu << 20;
    __asm__ volatile("dsb\n\tisb" ::: "memory");
    volatile uint32_t *src = &__data_load;
    for (volatile uint32_t *dst = &__data_start; dst < &__data_end;) {
        *dst++ = *src++;
    }
    for (volatile uint32_t *dst = &__bss_start; dst < &__bss_end;) {
        *dst++ = 0u;
    }
    uint32_t sp;
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    /* Paint up to 64 bytes below this frame. */
    for (volatile uint32_t *p = &__stack_limit; (uint32_t)p < sp - 64u;) {
        *p++ = STACK_PAINT;
    }
    int rc = main();
    if (__stack_limit != STACK_PAINT) {
        hio_puts("harness: stack overflow (the painted stack was exhausted)\n");
        hio_exit(71);
    }
    hio_exit(rc);
}

long harness_stack_used(void) {
    const uint32_t *p = &__stack_limit;
    while (p < &__stack_top && *p == STACK_PAINT) {
        p++;
    }
    return (long)((const uint8_t *)&__stack_top - (const uint8_t *)p);
}

void Fault_Handler(void) {
    hio_puts("harness: processor fault\n");
    hio_exit(70);
}
