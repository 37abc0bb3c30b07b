import { Code, Instruction, Register } from 'iced-x86';
import {
  Assembler,
  Image,
  Label,
  abs,
  al,
  ax,
  bx,
  byte,
  cl,
  cr0,
  cr3,
  cr4,
  cs,
  disassemble,
  disassembleRange,
  ds,
  dword,
  dx,
  eax,
  ebx,
  ecx,
  edi,
  esi,
  es,
  esp,
  fs,
  mem,
  qword,
  r12,
  r8d,
  rax,
  rbx,
  rcx,
  rdi,
  rip,
  rsi,
  rsp,
  si,
  ss,
  texts,
  word,
} from '../src';

/** Assemble one section and return its disassembly texts. */
function dis(a: Assembler): string[] {
  const img = a.link();
  return texts(disassemble(img.bytes, a.bitness, img.base, { csBase: a.csBase }));
}

describe('instruction forms', () => {
  test('16-bit real-mode code', () => {
    const a = new Assembler(16, 0x7c00);
    a.cli()
      .xor(ax, ax)
      .mov(ds, ax)
      .mov(ss, ax)
      .mov(ax, cs)
      .mov(si, 0x1234)
      .mov(al, byte(si))
      .mov(word(bx, -2), 0xbeef)
      .add(ax, 1)
      .add(ax, 0x100)
      .mov(eax, cr0)
      .or(eax, 1)
      .mov(cr0, eax)
      .push(ax)
      .pop(bx)
      .push(ds)
      .pop(es)
      .in(al, 0x60)
      .out(dx, al)
      .int(0x10)
      .sti()
      .hlt()
      .iret();
    expect(dis(a)).toEqual([
      'cli',
      'xor ax, ax',
      'mov ds, ax',
      'mov ss, ax',
      'mov ax, cs',
      'mov si, 0x1234',
      'mov al, [si]',
      'mov word [bx-2], 0xbeef',
      'add ax, 1',
      'add ax, 0x100',
      'mov eax, cr0',
      'or eax, 1',
      'mov cr0, eax',
      'push ax',
      'pop bx',
      'push ds',
      'pop es',
      'in al, 0x60',
      'out dx, al',
      'int 0x10',
      'sti',
      'hlt',
      'iret',
    ]);
  });

  test('32-bit code', () => {
    const a = new Assembler(32, 0x10000);
    a.mov(eax, 0xdeadbeef)
      .mov(dword(ebx, 8), eax)
      .mov(ecx, dword(ebx, 0x1000))
      .mov(dword(0xb8000), 0x0f41)
      .add(dword({ base: ebx, index: esi, scale: 4, disp: 16 }), 1)
      .sub(esi, edi)
      .and(eax, 0xfff)
      .xor(eax, -1)
      .cmp(al, 0x7f)
      .test(eax, 0x20)
      .test(al, al)
      .inc(ecx)
      .dec(dword(edi))
      .shl(eax, 12)
      .shr(eax, 1)
      .sar(eax, cl)
      .lea(esi, mem({ base: ebx, index: ecx, scale: 8, disp: 4 }))
      .movzx(eax, byte(esi))
      .movsx(ecx, ax)
      .push(0x10)
      .push(0x12345)
      .push(dword(esp))
      .pushf()
      .popf()
      .cpuid()
      .rdmsr()
      .wrmsr()
      .rdtsc()
      .repStosd()
      .repMovsb()
      .lodsb()
      .mov(cr3, eax)
      .mov(eax, cr4)
      .ret()
      .ret(8);
    expect(dis(a)).toEqual([
      'mov eax, 0xdeadbeef',
      'mov [ebx+8], eax',
      'mov ecx, [ebx+0x1000]',
      'mov dword [0xb8000], 0xf41',
      'add dword [ebx+esi*4+0x10], 1',
      'sub esi, edi',
      'and eax, 0xfff',
      'xor eax, 0xffffffff',
      'cmp al, 0x7f',
      'test eax, 0x20',
      'test al, al',
      'inc ecx',
      'dec dword [edi]',
      'shl eax, 0xc',
      'shr eax, 1',
      'sar eax, cl',
      'lea esi, [ebx+ecx*8+4]',
      'movzx eax, byte [esi]',
      'movsx ecx, ax',
      'push 0x10',
      'push 0x12345',
      'push dword [esp]',
      'pushf',
      'popf',
      'cpuid',
      'rdmsr',
      'wrmsr',
      'rdtsc',
      'rep stosd',
      'rep movsb',
      'lodsb',
      'mov cr3, eax',
      'mov eax, cr4',
      'ret',
      'ret 8',
    ]);
  });

  test('64-bit code', () => {
    const a = new Assembler(64, 0x200000);
    a.mov(rax, 0x7e5700000000n)
      .mov(rax, -1)
      .mov(rax, 0x12345678)
      .mov(rcx, 0xffffffff80000000n)
      .mov(qword(rsp, 8), rax)
      .mov(qword(rbx), 5)
      .mov(r8d, dword(r12, 0x10))
      .add(rsp, 0x28)
      .sub(rax, 0x1000)
      .xor(eax, eax)
      .push(rbx)
      .pop(r12)
      .push(fs)
      .mov(cr3, rax)
      .mov(rax, cr0)
      .lgdt(mem(rdi))
      .lidt(mem(rsi, 2))
      .vmcall()
      .vmmcall()
      .swapgs()
      .iretq()
      .repStosq()
      .movsq()
      .nop()
      .ret();
    expect(dis(a)).toEqual([
      'mov rax, 0x7e5700000000',
      'mov rax, 0xffffffffffffffff',
      'mov rax, 0x12345678',
      'mov rcx, 0xffffffff80000000',
      'mov [rsp+8], rax',
      'mov qword [rbx], 5',
      'mov r8d, [r12+0x10]',
      'add rsp, 0x28',
      'sub rax, 0x1000',
      'xor eax, eax',
      'push rbx',
      'pop r12',
      'push fs',
      'mov cr3, rax',
      'mov rax, cr0',
      'lgdt [rdi]',
      'lidt [rsi+2]',
      'vmcall',
      'vmmcall',
      'swapgs',
      'iretq',
      'rep stosq',
      'movsq',
      'nop',
      'ret',
    ]);
  });

  test('64-bit immediates pick the sign-extended imm32 form when they can', () => {
    const a = new Assembler(64, 0);
    a.mov(rax, -1).mov(rax, 0x80000000);
    const lines = disassemble(a.assemble(), 64);
    expect(lines.map((l) => l.code)).toEqual([Code.Mov_rm64_imm32, Code.Mov_r64_imm64]);
    expect(lines[0].length).toBe(7);
  });

  test('hypercall encodings are the vendors\' own', () => {
    const a = new Assembler(64, 0);
    a.vmcall().vmmcall();
    expect(Array.from(a.assemble())).toEqual([0x0f, 0x01, 0xc1, 0x0f, 0x01, 0xd9]);
  });

  test('every no-operand instruction method encodes in each mode', () => {
    const names = [
      'hlt', 'cli', 'sti', 'cld', 'std', 'clc', 'stc', 'cmc', 'cpuid', 'rdmsr', 'wrmsr', 'rdtsc', 'rdtscp', 'rdpmc',
      'nop', 'pause', 'ud2', 'clts', 'wbinvd', 'invd', 'xsetbv', 'xgetbv', 'mfence', 'leave', 'cbw', 'cwde', 'cwd',
      'cdq', 'vmcall', 'vmmcall', 'vmlaunch', 'vmresume', 'vmxoff', 'vmrun', 'stgi', 'clgi', 'int3', 'iret', 'ret',
      'retf', 'pushf', 'popf', 'movsb', 'movsw', 'movsd', 'stosb', 'stosw', 'stosd', 'lodsb', 'lodsw', 'lodsd',
      'outsb', 'insb', 'repMovsb', 'repMovsd', 'repStosb', 'repStosd',
    ] as const;
    const only64 = ['cdqe', 'cqo', 'swapgs', 'syscall', 'sysret', 'movsq', 'stosq', 'lodsq', 'repMovsq', 'repStosq', 'iretq'] as const;
    for (const bits of [16, 32, 64] as const) {
      const a = new Assembler(bits, 0x1000);
      const list: readonly string[] = bits === 64 ? [...names, ...only64] : names;
      for (const n of list) (a as unknown as Record<string, () => void>)[n]();
      const lines = disassemble(a.assemble(), bits, 0x1000);
      expect(lines).toHaveLength(list.length);
      expect(lines.every((l) => l.code !== Code.INVALID)).toBe(true);
    }
  });

  test('operand errors are reported at the call', () => {
    const a = new Assembler(32, 0);
    expect(() => a.mov(dword(ebx), eax).add(mem(ebx), 1)).toThrow(/operand size unknown/);
    expect(() => a.mov(eax, bx)).toThrow(/size mismatch/);
    expect(() => a.in(al, ecx)).toThrow(/dx/);
    expect(() => a.shl(eax, ebx)).toThrow(/cl/);
    expect(() => new Assembler(64, 0).jmpFar(8, 0)).toThrow(/64-bit/);
    expect(() => a.mov(cr0, ax)).toThrow(/32-bit register/);
    const b = new Assembler(64, 0);
    b.add(rax, 0x80000000);
    expect(() => b.assemble()).toThrow(/sign-extended 32-bit/);
    const c = new Assembler(16, 0);
    c.mov(ax, 0x10000);
    expect(() => c.assemble()).toThrow(/does not fit in 16 bits/);
  });
});

describe('labels', () => {
  test('forward and backward branches resolve to the bound addresses', () => {
    const a = new Assembler(32, 0x4000);
    const top = a.here('top');
    const fwd = a.label('fwd');
    a.dec(ecx).jnz(top).jmp(fwd).nop().nop().bind(fwd).call(top).loop(top);
    const img = a.link();
    expect(img.addressOf(top)).toBe(0x4000);
    expect(img.addressOf(fwd)).toBe(0x4000 + 1 + 2 + 2 + 2);
    expect(top.address).toBe(0x4000);
    expect(fwd.address).toBe(img.addressOf(fwd));
    expect(img.symbols).toMatchObject({ top: 0x4000, fwd: 0x4007 });
    expect(texts(disassemble(img.bytes, 32, 0x4000))).toEqual([
      'dec ecx',
      'jne 0x4000',
      'jmp 0x4007',
      'nop',
      'nop',
      'call 0x4000',
      'loop 0x4000',
    ]);
  });

  test('branches grow from short to near when the target is far, and stay short otherwise', () => {
    const a = new Assembler(64, 0x1000);
    const far = a.label('far');
    const near = a.label('near');
    a.je(near).jmp(far).bind(near).space(200, 0x90).bind(far).hlt();
    const lines = disassemble(a.assemble(), 64, 0x1000, { count: 2 });
    expect(lines[0].length).toBe(2); // je short
    expect(lines[1].length).toBe(5); // jmp near (rel32)
    expect(lines[1].text).toBe(`jmp 0x${(0x1000 + 2 + 5 + 200).toString(16)}`);
  });

  test('jcc and loop out of rel8 range are rewritten by the BlockEncoder', () => {
    const a = new Assembler(32, 0);
    const far = a.label();
    a.jne(far).loop(far).space(300, 0x90).bind(far).hlt();
    const img = a.link();
    const lines = disassemble(img.bytes, 32, 0);
    expect(lines[0].text).toBe(`jne 0x${img.addressOf(far).toString(16)}`);
    expect(lines[0].length).toBe(6);
    // LOOP has no rel32 form: the encoder emits loop short → jmp near
    expect(lines.find((l) => l.text === `jmp 0x${img.addressOf(far).toString(16)}`)).toBeDefined();
  });

  test('label addresses as immediates, displacements and data', () => {
    const a = new Assembler(32, 0x9000);
    const data = a.label('data');
    a.mov(esi, data)
      .mov(eax, dword(data))
      .mov(dword(data.plus(4)), 7)
      .mov(ebx, dword({ base: edi, disp: data }))
      .push(data)
      .cmp(eax, data.plus(8))
      .hlt();
    a.align(16, 0);
    a.bind(data);
    a.dd(data, data.plus(4));
    a.dw(0x1234);
    a.dq(data);
    const img = a.link();
    const d = img.addressOf(data);
    expect(d % 16).toBe(0);
    const hex = (n: number) => `0x${n.toString(16)}`;
    expect(texts(disassembleRange(img, 0x9000, d, { count: 7 }))).toEqual([
      `mov esi, ${hex(d)}`,
      `mov eax, [${hex(d)}]`,
      `mov dword [${hex(d + 4)}], 7`,
      `mov ebx, [edi+${hex(d)}]`,
      `push ${hex(d)}`,
      `cmp eax, ${hex(d + 8)}`,
      'hlt',
    ]);
    const dv = new DataView(img.bytes.buffer, img.bytes.byteOffset + d - img.base);
    expect(dv.getUint32(0, true)).toBe(d);
    expect(dv.getUint32(4, true)).toBe(d + 4);
    expect(dv.getUint16(8, true)).toBe(0x1234);
    expect(dv.getBigUint64(10, true)).toBe(BigInt(d));
  });

  test('64-bit label memory operands are RIP-relative unless absolute', () => {
    const a = new Assembler(64, 0x100000);
    const v = a.label('v');
    a.mov(rax, qword(v)).lea(rsi, mem(v)).mov(rax, abs(qword(v))).mov(rax, qword({ base: rip, disp: v.plus(8) })).hlt();
    a.bind(v).dq(0);
    const img = a.link();
    const at = img.addressOf(v);
    const lines = disassemble(img.bytes, 64, img.base);
    expect(texts(lines.slice(0, 5))).toEqual([
      `mov rax, [rel 0x${at.toString(16)}]`,
      `lea rsi, [rel 0x${at.toString(16)}]`,
      `mov rax, [0x${at.toString(16)}]`,
      `mov rax, [rel 0x${(at + 8).toString(16)}]`,
      'hlt',
    ]);
  });

  test('unbound and doubly bound labels are errors', () => {
    const a = new Assembler(64, 0);
    a.jmp(new Label('nowhere'));
    expect(() => a.assemble()).toThrow(/never bound: nowhere/);
    const b = new Assembler(64, 0);
    const l = b.here('twice');
    b.nop().bind(l);
    expect(() => b.assemble()).toThrow(/bound twice/);
  });

  test('a chain of forward branches converges', () => {
    // Each jump's size depends on the ones after it; layout must settle.
    const a = new Assembler(16, 0);
    const labels = Array.from({ length: 20 }, (_, i) => a.label(`l${i}`));
    labels.forEach((l, i) => {
      a.jmp(labels[labels.length - 1 - i]);
      a.space(i * 7, 0x90);
    });
    labels.forEach((l) => a.bind(l).nop());
    const img = a.link();
    for (const line of disassemble(img.bytes, 16, 0)) {
      if (line.text.startsWith('jmp')) {
        const target = Number.parseInt(line.text.split(' ')[1], 16);
        expect(labels.some((l) => img.addressOf(l) === target)).toBe(true);
      }
    }
  });

  test('literal pool goes after the section code', () => {
    const a = new Assembler(64, 0x2000);
    const s = a.literal('hi');
    a.lea(rsi, mem(s)).hlt();
    const img = a.link();
    const at = img.addressOf(s);
    expect(at).toBe(0x2000 + 7 + 1);
    expect(Array.from(img.bytes.subarray(at - 0x2000))).toEqual([0x68, 0x69, 0]);
  });
});

describe('escape hatches', () => {
  test('emit(Instruction) adds a caller-owned instruction, emit(factory) sees labels', () => {
    const a = new Assembler(64, 0x1000);
    const t = a.label('t');
    const own = Instruction.createRegReg(Code.Xchg_rm64_r64, Register.RBX, Register.RCX);
    a.emit(own);
    a.emit((ctx) => Instruction.createBranch(Code.Jmp_rel8_64, ctx.target(t)));
    a.bind(t).hlt();
    expect(texts(disassemble(a.assemble(), 64, 0x1000))).toEqual(['xchg rcx, rbx', 'jmp 0x1005', 'hlt']);
    // still usable: the assembler did not free it
    expect(own.code).toBe(Code.Xchg_rm64_r64);
    own.free();
  });

  test('op() maps operands to Instruction.create*', () => {
    const a = new Assembler(32, 0);
    a.op(Code.Bt_rm32_imm8, eax, 3).op('Imul_r32_rm32_imm32', ecx, dword(ebx), 1000).op(Code.Xchg_rm32_r32, dword(edi), eax);
    expect(texts(disassemble(a.assemble(), 32))).toEqual(['bt eax, 3', 'imul ecx, [ebx], 0x3e8', 'xchg eax, [edi]']);
  });

  test('db/dw/dd/dq, space and align emit raw bytes', () => {
    const a = new Assembler(32, 0x11);
    a.db(1, 0xff, -1, 'AB', [9, 8]).dw(0x1234).dd(0x89abcdef).dq(0x0102030405060708n).align(8, 0xcc).space(2, 0x55);
    expect(Array.from(a.assemble())).toEqual([
      1, 0xff, 0xff, 0x41, 0x42, 9, 8, 0x34, 0x12, 0xef, 0xcd, 0xab, 0x89, 8, 7, 6, 5, 4, 3, 2, 1, 0xcc, 0xcc, 0x55, 0x55,
    ]);
  });
});

describe('mixed-bitness images', () => {
  test('16-, 32- and 64-bit sections share labels and decode in their own modes', () => {
    const image = new Image();
    const r = image.section(16, { origin: 0x1000, name: 'r' });
    const p = image.section(32, { align: 16, name: 'p' });
    const l = image.section(64, { align: 16, name: 'l' });
    const p32 = p.label('p32');
    const l64 = l.label('l64');
    r.mov(eax, cr0).or(eax, 1).mov(cr0, eax).jmpFar(0x08, p32, 32);
    p.bind(p32).mov(eax, l64).jmpFar(0x18, l64);
    l.bind(l64).mov(rax, qword(p32)).jmp(p32);

    const img = image.assemble();
    expect(img.sections.map((s) => [s.name, s.bitness, s.start % 16])).toEqual([
      ['r', 16, 0],
      ['p', 32, 0],
      ['l', 64, 0],
    ]);
    const [rs, ps, ls] = img.sections;
    expect(ps.start).toBe(img.addressOf(p32));
    expect(ls.start).toBe(img.addressOf(l64));
    const h = (n: number) => `0x${n.toString(16)}`;
    expect(texts(disassembleRange(img, rs.start, rs.end))).toEqual([
      'mov eax, cr0',
      'or eax, 1',
      'mov cr0, eax',
      `jmp 8:${h(ps.start)}`,
    ]);
    expect(texts(disassembleRange(img, ps.start, ps.end))).toEqual([`mov eax, ${h(ls.start)}`, `jmp 0x18:${h(ls.start)}`]);
    expect(texts(disassembleRange(img, ls.start, ls.end))).toEqual([`mov rax, [rel ${h(ps.start)}]`, `jmp ${h(ps.start)}`]);
    // gap bytes between sections are zero-filled
    expect(img.bytes[rs.end - img.base]).toBe(0);
  });

  test('real-mode sections encode branches in IP space (CS base)', () => {
    const image = new Image();
    const r = image.section(16, { origin: 0x10000, csBase: 0x10000 });
    const top = r.here('top');
    const msg = r.label('msg');
    r.mov(si, msg.minus(0x10000)).jmp(top).bind(msg).db('x');
    const img = image.assemble();
    const lines = disassemble(img.bytes, 16, 0x10000, { csBase: 0x10000 });
    expect(lines[0].text).toBe('mov si, 5');
    expect(lines[1].text).toBe('jmp 0');
    expect(lines[1].ip).toBe(3);
    expect(img.addressOf(msg)).toBe(0x10005);
  });

  test('overlapping sections are rejected', () => {
    const image = new Image();
    image.section(16, { origin: 0x1000 }).space(0x20);
    image.section(64, { origin: 0x1010 }).hlt();
    expect(() => image.assemble()).toThrow(/overlap/);
  });

  test('image base before the first section pads the front', () => {
    const image = new Image({ base: 0xff0 });
    image.section(32, { origin: 0x1000 }).hlt();
    const img = image.assemble();
    expect(img.base).toBe(0xff0);
    expect(img.bytes.length).toBe(0x11);
    expect(img.bytes[0x10]).toBe(0xf4);
  });
});

describe('disassembler', () => {
  test('formats 64-bit immediates that iced-x86 1.21 Formatter gets wrong', () => {
    const a = new Assembler(64, 0);
    for (const v of [0x100000000n, 0x7e5700000000n, 0xffffffff00000001n, 0x8000000000000000n]) a.mov(rbx, v);
    expect(texts(disassemble(a.assemble(), 64))).toEqual([
      'mov rbx, 0x100000000',
      'mov rbx, 0x7e5700000000',
      'mov rbx, 0xffffffff00000001',
      'mov rbx, 0x8000000000000000',
    ]);
  });

  test('invalid bytes decode as (bad)', () => {
    expect(texts(disassemble(Uint8Array.of(0x0f, 0xff), 64))).toEqual(['(bad)']);
  });
});
