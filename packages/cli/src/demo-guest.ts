/**
 * The built-in demo guest (`tsvisor run` with no GUEST): the bytes of testkit's buildDemoGuest()
 * (packages/testkit/src/guests/demo.ts; real → protected → long mode, the CPU vendor on COM1,
 * WRMSR FS_BASE, HLT), prebuilt so that a plain `tsvisor run` does not load the testkit and
 * initialise iced-x86's encoder to assemble the same 425 bytes at every start (~40 ms).
 *
 * GENERATED — packages/cli/test/demo-guest.test.ts checks these bytes against buildDemoGuest()
 * and rewrites this file when run with TSVISOR_UPDATE_DEMO_GUEST=1.
 */
export const DEMO_GUEST = {
  loadAddress: 0x7c00,
  entry: 0x7c00,
  base64: [
    '+ozIjthmDwEeVnxmDwEWUHwPIMBmg8gBDyLAZupgfAAACAAAAAAAAAAAAAAAAAAA//8AAACazwD//wAAAJLPAP//AAAAmq8A',
    '//8AAACSzwAnACh8AAAAAAAAAAAAAAAAuBAAAACO2I7AjuCO6I7QvAAACAD8vwAABwAxwLkADAAA86vHBQAABwADEAcAxwUA',
    'EAcAAyAHAL8AIAcAuIMAAAC5AAIAAIkHgcAAACAAg8cI4vMPIOCDyCAPIuC4AAAHAA8i2LmAAADADzKByAABAAAPMA8gwIHI',
    'AAAAgA8iwOrwfAAAGAAAAAAAAAAAAAAAuCAAAACO2I7AjuCO6I7QSMfEAAAIAEiNNXUAAABmuvgDigaEwHQG7kj/xuv0McAP',
    'okiD7BCJHCSJVCQEiUwkCEiJ5rkMAAAA6DMAAABIg8QQSI01XwAAALkBAAAA6B4AAAC5AAEAwLgAEAAAuld+AAAPMGa6/QPs',
    'sGTmgPr06/1Ihcl0DGa6+AOKBu5I/8bi+MN0c3Zpc29yIGRlbW86IGxvbmcgbW9kZSwgQ1BVIHZlbmRvciAACgA=',
  ].join(''),
} as const;

/** The demo guest's image: a flat real-mode binary for DEMO_GUEST.loadAddress. */
export function demoGuestImage(): Uint8Array {
  return new Uint8Array(Buffer.from(DEMO_GUEST.base64, 'base64'));
}
