/**
 * Local APIC register offsets and fields (SDM Vol. 3A 10.4.1 Table 10-1, 10.12.1.2 Table 10-6).
 * In x2APIC mode register at offset `o` is MSR 0x800 + (o >> 4).
 */
export const APIC_ID = 0x20;
export const APIC_LVR = 0x30;
export const APIC_TASKPRI = 0x80;
export const APIC_ARBPRI = 0x90;
export const APIC_PROCPRI = 0xa0;
export const APIC_EOI = 0xb0;
export const APIC_RRR = 0xc0;
export const APIC_LDR = 0xd0;
export const APIC_DFR = 0xe0;
export const APIC_SPIV = 0xf0;
export const APIC_ISR = 0x100;
export const APIC_TMR = 0x180;
export const APIC_IRR = 0x200;
export const APIC_ESR = 0x280;
export const APIC_LVTCMCI = 0x2f0;
export const APIC_ICR = 0x300;
export const APIC_ICR2 = 0x310;
export const APIC_LVTT = 0x320;
export const APIC_LVTTHMR = 0x330;
export const APIC_LVTPC = 0x340;
export const APIC_LVT0 = 0x350;
export const APIC_LVT1 = 0x360;
export const APIC_LVTERR = 0x370;
export const APIC_TMICT = 0x380;
export const APIC_TMCCT = 0x390;
export const APIC_TDCR = 0x3e0;
/** x2APIC only (MSR 0x83F). */
export const APIC_SELF_IPI = 0x3f0;

export const X2APIC_MSR_BASE = 0x800;
export const X2APIC_MSR_LAST = 0x8ff;

/** Version register: version 0x14 (integrated APIC), max LVT entry 5 (six LVTs), as KVM reports. */
export const APIC_VERSION = 0x14;
export const KVM_APIC_LVT_NUM = 6;
export const APIC_LVR_VALUE = APIC_VERSION | ((KVM_APIC_LVT_NUM - 1) << 16);

// Spurious-interrupt vector register.
export const APIC_SPIV_APIC_ENABLED = 1 << 8;
export const APIC_SPIV_FOCUS_DISABLED = 1 << 9;

// LVT and ICR fields.
export const APIC_VECTOR_MASK = 0xff;
export const APIC_MODE_MASK = 0x700;
export const APIC_DEST_LOGICAL = 1 << 11;
export const APIC_SEND_PENDING = 1 << 12;
export const APIC_INPUT_POLARITY = 1 << 13;
export const APIC_LVT_REMOTE_IRR = 1 << 14;
export const APIC_LVT_LEVEL_TRIGGER = 1 << 15;
export const APIC_INT_ASSERT = 1 << 14;
export const APIC_INT_LEVELTRIG = 1 << 15;
export const APIC_LVT_MASKED = 1 << 16;
export const APIC_SHORT_MASK = 0xc0000;
export const APIC_DEST_NOSHORT = 0x0;
export const APIC_DEST_SELF = 0x40000;
export const APIC_DEST_ALLINC = 0x80000;
export const APIC_DEST_ALLBUT = 0xc0000;

// LVT timer modes (bits 18:17).
export const APIC_LVT_TIMER_ONESHOT = 0;
export const APIC_LVT_TIMER_PERIODIC = 1 << 17;
export const APIC_LVT_TIMER_TSCDEADLINE = 2 << 17;
export const APIC_LVT_TIMER_MASK = 3 << 17;

/** Writable bits of each LVT (timer mode bits are added per CPUID). */
export const LVT_MASK = APIC_LVT_MASKED | APIC_VECTOR_MASK;
export const LINT_MASK = LVT_MASK | APIC_MODE_MASK | APIC_INPUT_POLARITY | APIC_LVT_LEVEL_TRIGGER;
export const APIC_LVT_WRITE_MASK: readonly number[] = [
  LVT_MASK, // LVTT (+ timer mode)
  LVT_MASK | APIC_MODE_MASK, // LVTTHMR
  LVT_MASK | APIC_MODE_MASK, // LVTPC
  LINT_MASK, // LVT0
  LINT_MASK, // LVT1
  LVT_MASK, // LVTERR
];

/** Delivery modes (ICR, LVT, IOAPIC redirection entries, MSI data bits 10:8). */
export enum ApicDeliveryMode {
  FIXED = 0,
  LOWEST = 1,
  SMI = 2,
  REMRD = 3,
  NMI = 4,
  INIT = 5,
  STARTUP = 6,
  EXTINT = 7,
}

/** ESR bits (SDM 10.5.3). */
export const APIC_ESR_SEND_ILLEGAL_VECTOR = 1 << 5;
export const APIC_ESR_RECV_ILLEGAL_VECTOR = 1 << 6;
export const APIC_ESR_ILLEGAL_REGISTER = 1 << 7;

/** IA32_APIC_BASE bits. */
export const MSR_IA32_APICBASE_BSP = 1n << 8n;
export const X2APIC_ENABLE = 1n << 10n;
export const MSR_IA32_APICBASE_ENABLE = 1n << 11n;
export const MSR_IA32_APICBASE_BASE = 0xffffff000n;
export const APIC_DEFAULT_PHYS_BASE = 0xfee00000;

export const APIC_BROADCAST = 0xff;
export const X2APIC_BROADCAST = 0xffffffff;

/** DFR models (bits 31:28). */
export const APIC_DFR_FLAT = 0xf;
export const APIC_DFR_CLUSTER = 0x0;

/** KVM's min_timer_period_us: periodic LAPIC timers faster than this are slowed to it. */
export const MIN_TIMER_PERIOD_NS = 200_000;
