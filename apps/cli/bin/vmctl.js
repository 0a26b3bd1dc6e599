#!/usr/bin/env node
// Launcher for the compiled CLI; `npm install` builds dist/ (root "prepare").
import { main } from '../dist/main.js';

process.exitCode = await main(process.argv.slice(2));
