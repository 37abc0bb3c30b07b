/**
 * Architectural constants of the emulated processor (Intel SDM Vol. 3A ch. 2, 4, 6;
 * AMD APM Vol. 2 ch. 3, 5, 8). Plain numbers so the hot path never touches BigInt.
 */

// RFLAGS (SDM Vol. 1 3.4.3)
export const CF = 1 << 0;
export const PF = 1 << 2;
export const AF = 1 << 4;
export const ZF = 1 << 6;
export const SF = 1 << 7;
export const TF = 1 << 8;
export const IF = 1 << 9;
export const DF = 1 << 10;
export const OF = 1 << 11;
export const IOPL = 3 << 12;
export const NT = 1 << 14;
export const RF = 1 << 16;
export const VM = 1 << 17;
export const AC = 1 << 18;
export const VIF = 1 << 19;
export const VIP = 1 << 20;
export const ID = 1 << 21;
/** The six status flags the interpreter computes lazily. */
export const ARITH = CF | PF | AF | ZF | SF | OF;

// Exception vectors (SDM Vol. 3A 6.15)
export const DE = 0, DB = 1, NMI_VEC = 2, BP = 3, OF_VEC = 4, BR = 5, UD = 6, NM = 7, DF_VEC = 8;
export const TS = 10, NP = 11, SS_VEC = 12, GP = 13, PF_VEC = 14, MF = 16, AC_VEC = 17, MC = 18, XM = 19;

// CR0 (SDM Vol. 3A 2.5)
export const CR0_PE = 1, CR0_MP = 2, CR0_EM = 4, CR0_TS = 8, CR0_ET = 0x10, CR0_NE = 0x20;
export const CR0_WP = 1 << 16, CR0_AM = 1 << 18, CR0_NW = 1 << 29, CR0_CD = 1 << 30;
export const CR0_PG = 0x80000000;
// CR4
export const CR4_VME = 1, CR4_PVI = 2, CR4_TSD = 4, CR4_DE = 8, CR4_PSE = 0x10, CR4_PAE = 0x20;
export const CR4_MCE = 0x40, CR4_PGE = 0x80, CR4_PCE = 0x100, CR4_OSFXSR = 0x200, CR4_OSXMMEXCPT = 0x400;
export const CR4_UMIP = 0x800, CR4_LA57 = 0x1000, CR4_VMXE = 0x2000, CR4_SMXE = 0x4000;
export const CR4_FSGSBASE = 0x10000, CR4_PCIDE = 0x20000, CR4_OSXSAVE = 0x40000;
export const CR4_SMEP = 0x100000, CR4_SMAP = 0x200000;
// EFER (SDM Vol. 3A 2.2.1; APM Vol. 2 3.1.7)
export const EFER_SCE = 1, EFER_LME = 0x100, EFER_LMA = 0x400, EFER_NXE = 0x800, EFER_SVME = 0x1000;

// MSRs
export const MSR_TSC = 0x10;
export const MSR_APIC_BASE = 0x1b;
export const MSR_SYSENTER_CS = 0x174, MSR_SYSENTER_ESP = 0x175, MSR_SYSENTER_EIP = 0x176;
export const MSR_DEBUGCTL = 0x1d9;
export const MSR_PAT = 0x277;
export const MSR_EFER = 0xc0000080, MSR_STAR = 0xc0000081, MSR_LSTAR = 0xc0000082, MSR_CSTAR = 0xc0000083;
export const MSR_SFMASK = 0xc0000084, MSR_FS_BASE = 0xc0000100, MSR_GS_BASE = 0xc0000101;
export const MSR_KERNEL_GS_BASE = 0xc0000102, MSR_TSC_AUX = 0xc0000103;

// Segment attribute bits (CpuState.segAttr layout: descriptor bits 40..55, + unusable)
export const A_TYPE = 0xf, A_S = 0x10, A_P = 0x80, A_L = 0x2000, A_DB = 0x4000, A_G = 0x8000;
export const A_UNUSABLE = 0x10000;

// Segment register indexes (VcpuSreg order)
export const ES = 0, CS = 1, SS = 2, DS = 3, FS = 4, GS = 5, TR = 6, LDTR = 7;

// TLB permission bits: what an access of each kind may do without walking again.
export const P_SR = 1, P_SW = 2, P_UR = 4, P_UW = 8, P_SX = 16, P_UX = 32;

/** Physical-address width this processor reports (CPUID 0x80000008) and checks in paging entries. */
export const MAXPHYADDR = 48;
