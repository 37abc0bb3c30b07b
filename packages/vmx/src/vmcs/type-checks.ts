/**
 * Build-time proof that the VMCS accessors reject mismatched widths and VMWRITEs to
 * read-only fields: every line below must fail to type-check. `tsc -b` fails with "Unused
 * '@ts-expect-error' directive" if any of them starts to compile. Never called.
 */
import { F, highOf } from './fields';
import { Vmcs } from './vmcs';

export function _vmcsAccessorTypeChecks(v: Vmcs): void {
  // @ts-expect-error a natural-width field read as 16-bit (kvm's vmcs_read16 on GUEST_RIP)
  v.read16(F.GUEST_RIP);
  // @ts-expect-error a 16-bit field read as 32-bit
  v.read32(F.GUEST_CS_SELECTOR);
  // @ts-expect-error a 32-bit field read as 64-bit
  v.read64(F.GUEST_CS_AR_BYTES);
  // @ts-expect-error a 64-bit field read as natural-width
  v.readNat(F.EPT_POINTER);
  // @ts-expect-error VMWRITE to a read-only VM-exit information field
  v.write32(F.VM_EXIT_REASON, 0);
  // @ts-expect-error VMWRITE to a read-only natural-width field
  v.writeNat(F.EXIT_QUALIFICATION, 0n);
  // @ts-expect-error VMWRITE to the read-only guest-physical address
  v.write64(F.GUEST_PHYSICAL_ADDRESS, 0n);
  // @ts-expect-error the HIGH half of a read-only field is read-only too
  v.write32(highOf(F.GUEST_PHYSICAL_ADDRESS), 0);
  // @ts-expect-error a plain number is not a VMCS field constant
  v.read32(0x4402);
  // @ts-expect-error the processor's exit recording takes only exit-information fields
  v.exitWrite32(F.GUEST_CS_LIMIT, 0);
}
